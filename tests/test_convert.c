/* mnv_convert: tiny fixtures converted to affine (4- and 8-bit), mxfp4 and
 * plain dtypes; the output's tensor names, dtypes and shapes, the contiguous
 * Hugging Face layout of every shard, config.json's quantization block, the
 * index, bit-exact agreement with mnv_quantize_row on the source rows,
 * dequantize round trips, sharding, gpt-oss's MXFP4 sanitize, side files,
 * and errors. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <cjson/cJSON.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/cpu/qmatmul.h"
#include "io/safetensors.h"
#include "quant/quant.h"
#include "test.h"

#define FIX "fixtures/models/"

static char tmpdir[64];
static int n_dirs;

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

/* A fresh, not yet existing directory path under tmpdir (kept until exit). */
static const char *new_dir(void) {
    static char buf[64][256];
    if (n_dirs >= 64) abort(); /* a test bug, not a library one */
    char *b = buf[n_dirs];
    snprintf(b, sizeof buf[0], "%s/out%d", tmpdir, n_dirs++);
    return b;
}

static char *join(const char *dir, const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static bool exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

static cJSON *read_json(const char *path) {
    char *text = NULL;
    size_t len = 0;
    if (mnv_read_file(path, &text, &len) != MNV_OK) return NULL;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    return j;
}

typedef struct {
    uint64_t done, total;
    int calls;
} progress_rec;

static void on_progress(void *user, uint64_t done, uint64_t total) {
    progress_rec *p = user;
    p->calls++;
    if (done < p->done) p->done = UINT64_MAX; /* must not go backwards */
    else p->done = done;
    p->total = total;
}

static mnv_status convert(const char *src, const char *dst, const char *mode, int bits, int gs, mnv_dtype dt,
                          int dequant, uint64_t shard, progress_rec *pr) {
    mnv_convert_params p = mnv_convert_params_default();
    p.src_dir = src;
    p.dst_dir = dst;
    p.q_mode = mode;
    p.q_bits = bits;
    p.q_group_size = gs;
    if (dt != MNV_DTYPE_COUNT) p.dtype = dt;
    p.dequantize = dequant;
    p.max_shard_bytes = shard;
    if (pr) {
        p.progress = on_progress;
        p.user_data = pr;
    }
    return mnv_convert(&p);
}

/* ---- checks on one output file ------------------------------------------------ */

/* Header padded to 8, tensors sorted by (element size desc, name) and
 * tiling the buffer exactly: what Hugging Face's reader demands. */
static void check_hf_layout(const char *path) {
    char *data = NULL;
    size_t len = 0;
    CHECK(mnv_read_file(path, &data, &len) == MNV_OK);
    if (!data || len < 8) return;
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)(uint8_t)data[i] << (8 * i);
    CHECKF((8 + hlen) % 8 == 0, "%s: header length %llu", path, (unsigned long long)hlen);
    cJSON *h = cJSON_ParseWithLength(data + 8, (size_t)hlen);
    CHECK(h != NULL);
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(h, "__metadata__");
    CHECK(meta && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(meta, "format")));
    uint64_t expect = 0;
    size_t last_size = 8;
    const char *last_name = "";
    int bad = 0;
    for (const cJSON *e = h ? h->child : NULL; e; e = e->next) { /* written in file order */
        if (!strcmp(e->string, "__metadata__")) continue;
        const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        mnv_dtype dt;
        CHECK(mnv_dtype_from_name(cJSON_GetObjectItemCaseSensitive(e, "dtype")->valuestring, &dt));
        size_t sz = mnv_dtype_size(dt);
        uint64_t b = (uint64_t)cJSON_GetArrayItem(off, 0)->valuedouble;
        bad += b != expect || (8 + hlen + b) % sz != 0;
        bad += sz > last_size || (sz == last_size && strcmp(last_name, e->string) >= 0);
        expect = (uint64_t)cJSON_GetArrayItem(off, 1)->valuedouble;
        last_size = sz;
        last_name = e->string;
    }
    CHECKF(bad == 0 && 8 + hlen + expect == len, "%s: %d layout problems; buffer ends at %llu of %zu", path, bad,
           (unsigned long long)(8 + hlen + expect), len);
    cJSON_Delete(h);
    free(data);
}

static const mnv_st_tensor *expect_tensor(const mnv_st_set *set, const char *name, mnv_dtype dt, int ndim,
                                          int64_t d0, int64_t d1) {
    const mnv_st_tensor *t = mnv_st_find(set, name);
    CHECKF(t != NULL, "missing tensor %s", name);
    if (!t) return NULL;
    CHECKF(t->dtype == dt && t->ndim == ndim && t->shape[0] == d0 && (ndim < 2 || t->shape[1] == d1),
           "%s: %s %d dims [%lld, %lld], want %s [%lld, %lld]", name, mnv_dtype_name(t->dtype), t->ndim,
           (long long)t->shape[0], (long long)(t->ndim > 1 ? t->shape[1] : 0), mnv_dtype_name(dt), (long long)d0,
           (long long)d1);
    return t;
}

/* Every output row equals mnv_quantize_row on the (cast) source row, and
 * mnv_dequant_row of the stored tensors equals the reference dequant. */
static void check_quantized(const mnv_st_set *src, const mnv_st_set *out, const char *path, const mnv_qformat *f,
                            mnv_dtype cast) {
    char name[256];
    snprintf(name, sizeof name, "%s.weight", path);
    const mnv_st_tensor *w = mnv_st_find(src, name), *q = mnv_st_find(out, name);
    snprintf(name, sizeof name, "%s.scales", path);
    const mnv_st_tensor *s = mnv_st_find(out, name);
    snprintf(name, sizeof name, "%s.biases", path);
    const mnv_st_tensor *b = mnv_st_find(out, name);
    CHECKF(w && q && s && (b != NULL) == (f->mode == MNV_QMODE_AFFINE), "%s: tensors missing", path);
    if (!w || !q || !s) return;
    int64_t rows = w->shape[0], k = w->shape[1], words = mnv_qformat_row_words(f, k), groups = k / f->group_size;
    size_t ssz = mnv_dtype_size(f->scale_dtype);
    CHECK(q->dtype == MNV_DTYPE_U32 && q->shape[0] == rows && q->shape[1] == words);
    CHECK(s->dtype == f->scale_dtype && s->shape[1] == groups);
    float *row = malloc((size_t)k * 4), *dq = malloc((size_t)k * 4), *dq_ref = malloc((size_t)k * 4);
    uint32_t *ref = malloc((size_t)words * 4);
    uint8_t sref[512], bref[512];
    int bad_pack = 0, bad_dq = 0;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t i = 0; i < k; i++) {
            float v = ((const float *)w->data)[r * k + i];
            row[i] = cast == MNV_DTYPE_BF16 ? mnv_bf16_to_f32(mnv_f32_to_bf16(v)) : v;
        }
        mnv_quantize_row(f, row, k, ref, sref, bref, 1.0f);
        const uint32_t *qr = (const uint32_t *)q->data + r * words;
        const uint8_t *sr = (const uint8_t *)s->data + (size_t)(r * groups) * ssz;
        const uint8_t *br = b ? (const uint8_t *)b->data + (size_t)(r * groups) * ssz : NULL;
        bad_pack += memcmp(qr, ref, (size_t)words * 4) != 0 || memcmp(sr, sref, (size_t)groups * ssz) != 0 ||
                    (br && memcmp(br, bref, (size_t)groups * ssz) != 0);
        mnv_dequant_row(f, qr, sr, br, 1.0f, dq, k);
        mnv_dequant_row(f, ref, sref, b ? bref : NULL, 1.0f, dq_ref, k);
        bad_dq += memcmp(dq, dq_ref, (size_t)k * 4) != 0;
    }
    CHECKF(bad_pack == 0 && bad_dq == 0, "%s: %d rows differ from mnv_quantize_row, %d dequantized", path, bad_pack,
           bad_dq);
    free(row);
    free(dq);
    free(dq_ref);
    free(ref);
}

static const char *LLAMA_MODULES[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                      "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};

/* The index: total_size, total_parameters, a sorted weight_map naming
 * existing shard files that hold the tensors, and nothing else. */
static void check_index(const char *dir, const mnv_st_set *out, uint64_t want_params) {
    cJSON *idx = read_json(join(dir, "model.safetensors.index.json"));
    CHECK(idx != NULL);
    if (!idx) return;
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(idx, "metadata");
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(idx, "weight_map");
    uint64_t total = 0;
    for (size_t i = 0; i < mnv_st_count(out); i++) total += mnv_st_get(out, i)->nbytes;
    CHECK((uint64_t)cJSON_GetObjectItemCaseSensitive(meta, "total_size")->valuedouble == total);
    CHECKF((uint64_t)cJSON_GetObjectItemCaseSensitive(meta, "total_parameters")->valuedouble == want_params,
           "total_parameters %.0f, want %llu", cJSON_GetObjectItemCaseSensitive(meta, "total_parameters")->valuedouble,
           (unsigned long long)want_params);
    CHECK(cJSON_GetArraySize(map) == (int)mnv_st_count(out));
    int bad = 0;
    const char *prev = "";
    for (const cJSON *e = map ? map->child : NULL; e; e = e->next) {
        const mnv_st_tensor *t = mnv_st_find(out, e->string);
        bad += !t || strcmp(prev, e->string) >= 0 || !cJSON_IsString(e) ||
               strcmp(mnv_st_file_name(out, t->file_index), e->valuestring) != 0;
        prev = e->string;
    }
    CHECK(bad == 0);
    cJSON_Delete(idx);
}

static uint64_t source_params(const mnv_st_set *src) {
    uint64_t n = 0;
    for (size_t i = 0; i < mnv_st_count(src); i++) {
        const mnv_st_tensor *t = mnv_st_get(src, i);
        n += t->nbytes / mnv_dtype_size(t->dtype);
    }
    return n;
}

/* Every source key survives; "quantization" and its copy are as given. */
static void check_config(const char *src_dir, const char *dir, const mnv_qformat *f) {
    cJSON *src = read_json(join(src_dir, "config.json")), *out = read_json(join(dir, "config.json"));
    CHECK(src && out);
    if (!src || !out) goto done;
    for (const cJSON *e = src->child; e; e = e->next)
        if (strcmp(e->string, "eos_token_id") != 0)
            CHECKF(cJSON_Compare(e, cJSON_GetObjectItemCaseSensitive(out, e->string), 1), "config key %s", e->string);
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(out, "quantization");
    const cJSON *qc = cJSON_GetObjectItemCaseSensitive(out, "quantization_config");
    if (!f) {
        CHECK(!q && !qc);
        goto done;
    }
    CHECK(q && cJSON_Compare(q, qc, 1));
    CHECK(cJSON_GetObjectItemCaseSensitive(q, "group_size")->valueint == f->group_size);
    CHECK(cJSON_GetObjectItemCaseSensitive(q, "bits")->valueint == f->bits);
    CHECK(!strcmp(cJSON_GetObjectItemCaseSensitive(q, "mode")->valuestring, mnv_qmode_name(f->mode)));
    CHECK(cJSON_GetArraySize(q) == 3); /* no per-layer entries for a plain conversion */
    const char *prev = "";
    for (const cJSON *e = out->child; e; e = e->next) { /* keys sorted, as mlx-lm's save_config */
        CHECKF(strcmp(prev, e->string) < 0, "config keys out of order at %s", e->string);
        prev = e->string;
    }
done:
    cJSON_Delete(src);
    cJSON_Delete(out);
}

static void check_llama_quantized(const char *dst, const mnv_qformat *f, mnv_dtype cast) {
    mnv_st_set *src = NULL, *out = NULL;
    CHECK(mnv_st_open_dir(FIX "tiny-llama", &src) == MNV_OK);
    mnv_status st = mnv_st_open_dir(dst, &out);
    CHECKF(st == MNV_OK, "open %s: %s", dst, mnv_last_error());
    if (!src || !out) goto done;
    int per = f->mode == MNV_QMODE_AFFINE ? 3 : 2;
    CHECKF(mnv_st_count(out) == (size_t)(3 * 7 * per + 2 * per + 7), "%zu tensors", mnv_st_count(out));
    mnv_dtype sd = f->scale_dtype, fl = cast == MNV_DTYPE_COUNT ? MNV_DTYPE_F32 : cast;
    int64_t w96 = mnv_qformat_row_words(f, 96), w160 = mnv_qformat_row_words(f, 160);
    expect_tensor(out, "model.layers.0.self_attn.q_proj.weight", MNV_DTYPE_U32, 2, 96, w96);
    expect_tensor(out, "model.layers.0.self_attn.q_proj.scales", sd, 2, 96, 96 / f->group_size);
    expect_tensor(out, "model.layers.2.self_attn.k_proj.weight", MNV_DTYPE_U32, 2, 32, w96);
    expect_tensor(out, "model.layers.1.mlp.down_proj.weight", MNV_DTYPE_U32, 2, 96, w160);
    expect_tensor(out, "model.layers.1.mlp.down_proj.scales", sd, 2, 96, 160 / f->group_size);
    expect_tensor(out, "model.embed_tokens.weight", MNV_DTYPE_U32, 2, 384, w96);
    expect_tensor(out, "lm_head.weight", MNV_DTYPE_U32, 2, 384, w96);
    if (f->mode == MNV_QMODE_AFFINE) expect_tensor(out, "lm_head.biases", sd, 2, 384, 96 / f->group_size);
    else CHECK(mnv_st_find(out, "lm_head.biases") == NULL);
    CHECK(mnv_st_find(out, "model.norm.scales") == NULL);
    const mnv_st_tensor *n_out = expect_tensor(out, "model.layers.1.input_layernorm.weight", fl, 1, 96, 0);
    const mnv_st_tensor *n_src = mnv_st_find(src, "model.layers.1.input_layernorm.weight");
    if (n_out && n_src) { /* norms untouched (cast only) */
        int bad = 0;
        for (int i = 0; i < 96; i++) {
            float v = ((const float *)n_src->data)[i];
            bad += fl == MNV_DTYPE_F32 ? ((const float *)n_out->data)[i] != v
                                       : ((const uint16_t *)n_out->data)[i] != mnv_f32_to_bf16(v);
        }
        CHECK(bad == 0);
    }
    char path[128];
    for (int l = 0; l < 3; l++)
        for (int m = 0; m < 7; m++) {
            snprintf(path, sizeof path, "model.layers.%d.%s", l, LLAMA_MODULES[m]);
            check_quantized(src, out, path, f, cast);
        }
    check_quantized(src, out, "model.embed_tokens", f, cast);
    check_quantized(src, out, "lm_head", f, cast);
    check_index(dst, out, source_params(src));
    check_hf_layout(join(dst, "model.safetensors"));
    check_config(FIX "tiny-llama", dst, f);
    CHECK(exists(join(dst, "generation_config.json")));
done:
    mnv_st_close(src);
    mnv_st_close(out);
}

/* ---- the tests ------------------------------------------------------------------------ */

static const char *g_affine4; /* tiny-llama, affine 4-bit g32, f32 scales (reused) */

static void test_llama_affine4_mxfp4(void) {
    const char *dst = new_dir();
    progress_rec pr = {0};
    mnv_status st = convert(FIX "tiny-llama", dst, "affine", 4, 32, MNV_DTYPE_COUNT, 0, 0, &pr);
    CHECKF(st == MNV_OK, "affine 4: %s", mnv_last_error());
    mnv_qformat f = {MNV_QMODE_AFFINE, 4, 32, MNV_DTYPE_F32};
    check_llama_quantized(dst, &f, MNV_DTYPE_COUNT);
    CHECK(pr.calls > 0 && pr.done == pr.total && pr.total > 0);
    g_affine4 = dst;

    dst = new_dir();
    st = convert(FIX "tiny-llama", dst, "mxfp4", 0, 0, MNV_DTYPE_COUNT, 0, 0, NULL);
    CHECKF(st == MNV_OK, "mxfp4: %s", mnv_last_error());
    f = (mnv_qformat){MNV_QMODE_MXFP4, 4, 32, MNV_DTYPE_U8};
    check_llama_quantized(dst, &f, MNV_DTYPE_COUNT);

    dst = new_dir(); /* weights cast to bf16 before quantizing, bf16 scales */
    st = convert(FIX "tiny-llama", dst, "affine", 8, 32, MNV_DTYPE_BF16, 0, 0, NULL);
    CHECKF(st == MNV_OK, "affine 8 bf16: %s", mnv_last_error());
    f = (mnv_qformat){MNV_QMODE_AFFINE, 8, 32, MNV_DTYPE_BF16};
    check_llama_quantized(dst, &f, MNV_DTYPE_BF16);
}

/* tiny-qwen3 (hidden 64, tied embeddings): every weight divides by 64. */
static void test_qwen3_affine8_g64(void) {
    const char *dst = new_dir();
    mnv_status st = convert(FIX "tiny-qwen3", dst, "affine", 8, 64, MNV_DTYPE_COUNT, 0, 0, NULL);
    CHECKF(st == MNV_OK, "qwen3 affine 8: %s", mnv_last_error());
    mnv_st_set *src = NULL, *out = NULL;
    CHECK(mnv_st_open_dir(FIX "tiny-qwen3", &src) == MNV_OK);
    CHECK(mnv_st_open_dir(dst, &out) == MNV_OK);
    if (!src || !out) goto done;
    mnv_qformat f = {MNV_QMODE_AFFINE, 8, 64, MNV_DTYPE_F32};
    expect_tensor(out, "model.layers.0.self_attn.q_proj.weight", MNV_DTYPE_U32, 2, 128, 16);
    expect_tensor(out, "model.layers.0.self_attn.q_proj.scales", MNV_DTYPE_F32, 2, 128, 1);
    expect_tensor(out, "model.layers.0.self_attn.o_proj.weight", MNV_DTYPE_U32, 2, 64, 32);
    expect_tensor(out, "model.layers.0.self_attn.o_proj.biases", MNV_DTYPE_F32, 2, 64, 2);
    expect_tensor(out, "model.embed_tokens.weight", MNV_DTYPE_U32, 2, 300, 16);
    expect_tensor(out, "model.layers.0.self_attn.q_norm.weight", MNV_DTYPE_F32, 1, 32, 0);
    CHECK(mnv_st_find(out, "lm_head.weight") == NULL && mnv_st_find(out, "model.layers.0.self_attn.q_norm.scales") == NULL);
    const char *mods[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                          "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
    char path[128];
    for (int l = 0; l < 2; l++)
        for (int m = 0; m < 7; m++) {
            snprintf(path, sizeof path, "model.layers.%d.%s", l, mods[m]);
            check_quantized(src, out, path, &f, MNV_DTYPE_COUNT);
        }
    check_quantized(src, out, "model.embed_tokens", &f, MNV_DTYPE_COUNT);
    check_index(dst, out, source_params(src));
    check_config(FIX "tiny-qwen3", dst, &f);
done:
    mnv_st_close(src);
    mnv_st_close(out);
}

/* Dequantize: every module comes back as float equal to dequant(quant(w))
 * (f32 exactly; bf16 = that value rounded once); the quantization keys go. */
static void check_dequantized(const char *qdir, const char *ddir, mnv_dtype out_dt) {
    mnv_st_set *q = NULL, *d = NULL, *src = NULL;
    CHECK(mnv_st_open_dir(qdir, &q) == MNV_OK);
    CHECK(mnv_st_open_dir(ddir, &d) == MNV_OK);
    CHECK(mnv_st_open_dir(FIX "tiny-llama", &src) == MNV_OK);
    if (!q || !d || !src) goto done;
    CHECK(mnv_st_count(d) == mnv_st_count(src));
    int bad = 0;
    for (size_t i = 0; i < mnv_st_count(src); i++) {
        const mnv_st_tensor *s = mnv_st_get(src, i), *t = mnv_st_find(d, s->name);
        bad += !t || t->dtype != out_dt || t->ndim != s->ndim || memcmp(t->shape, s->shape, sizeof s->shape) != 0;
    }
    CHECKF(bad == 0, "%d tensors differ in name, dtype or shape", bad);
    const mnv_st_tensor *w = mnv_st_find(q, "model.layers.1.mlp.down_proj.weight");
    const mnv_st_tensor *sc = mnv_st_find(q, "model.layers.1.mlp.down_proj.scales");
    const mnv_st_tensor *bi = mnv_st_find(q, "model.layers.1.mlp.down_proj.biases");
    const mnv_st_tensor *o = mnv_st_find(d, "model.layers.1.mlp.down_proj.weight");
    if (!w || !sc || !bi || !o) goto done;
    mnv_qformat f = {MNV_QMODE_AFFINE, 4, 32, sc->dtype};
    float row[160];
    bad = 0;
    size_t ssz = mnv_dtype_size(sc->dtype);
    for (int64_t r = 0; r < 96; r++) {
        mnv_dequant_row(&f, (const uint32_t *)w->data + r * 20, (const uint8_t *)sc->data + r * 5 * ssz,
                        (const uint8_t *)bi->data + r * 5 * ssz, 1.0f, row, 160);
        for (int i = 0; i < 160; i++) {
            if (out_dt == MNV_DTYPE_F32) bad += ((const float *)o->data)[r * 160 + i] != row[i];
            else bad += ((const uint16_t *)o->data)[r * 160 + i] != mnv_f32_to_bf16(row[i]);
        }
    }
    CHECKF(bad == 0, "%d dequantized values differ", bad);
    check_config(FIX "tiny-llama", ddir, NULL);
    check_hf_layout(join(ddir, "model.safetensors"));
done:
    mnv_st_close(q);
    mnv_st_close(d);
    mnv_st_close(src);
}

static void test_dequantize(void) {
    if (!g_affine4) return;
    const char *dst = new_dir();
    mnv_status st = convert(g_affine4, dst, NULL, 0, 0, MNV_DTYPE_COUNT, 1, 0, NULL);
    CHECKF(st == MNV_OK, "dequantize: %s", mnv_last_error());
    check_dequantized(g_affine4, dst, MNV_DTYPE_F32);
    const char *dst2 = new_dir();
    st = convert(g_affine4, dst2, NULL, 0, 0, MNV_DTYPE_BF16, 1, 0, NULL);
    CHECKF(st == MNV_OK, "dequantize bf16: %s", mnv_last_error());
    check_dequantized(g_affine4, dst2, MNV_DTYPE_BF16);
}

static void test_sharding(void) {
    const char *dst = new_dir();
    const uint64_t limit = 20000;
    mnv_status st = convert(FIX "tiny-llama", dst, "affine", 4, 32, MNV_DTYPE_COUNT, 0, limit, NULL);
    CHECKF(st == MNV_OK, "sharded: %s", mnv_last_error());
    CHECK(!exists(join(dst, "model.safetensors")));
    mnv_st_set *out = NULL, *ref = NULL;
    CHECK(mnv_st_open_dir(dst, &out) == MNV_OK);
    CHECK(g_affine4 && mnv_st_open_dir(g_affine4, &ref) == MNV_OK);
    if (!out || !ref) goto done;
    int32_t n = mnv_st_n_files(out);
    CHECKF(n >= 5, "%d shards", (int)n);
    char name[64];
    int bad = 0;
    for (int32_t i = 0; i < n; i++) {
        snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", (int)i + 1, (int)n);
        bad += !exists(join(dst, name));
        uint64_t bytes = 0;
        int count = 0;
        for (size_t k = 0; k < mnv_st_count(out); k++) {
            const mnv_st_tensor *t = mnv_st_get(out, k);
            if (strcmp(mnv_st_file_name(out, t->file_index), name) == 0) {
                bytes += t->nbytes;
                count++;
            }
        }
        bad += count == 0 || (bytes > limit && count > 1);
        if (exists(join(dst, name))) check_hf_layout(join(dst, name));
    }
    CHECKF(bad == 0, "%d shard problems", bad);
    CHECK(mnv_st_count(out) == mnv_st_count(ref));
    bad = 0;
    for (size_t k = 0; k < mnv_st_count(ref); k++) {
        const mnv_st_tensor *a = mnv_st_get(ref, k), *b = mnv_st_find(out, a->name);
        bad += !b || b->nbytes != a->nbytes || memcmp(a->data, b->data, (size_t)a->nbytes) != 0;
    }
    CHECKF(bad == 0, "%d tensors differ from the single-file conversion", bad);
    mnv_st_set *src = NULL;
    CHECK(mnv_st_open_dir(FIX "tiny-llama", &src) == MNV_OK);
    if (src) check_index(dst, out, source_params(src));
    mnv_st_close(src);
done:
    mnv_st_close(out);
    mnv_st_close(ref);
}

/* gpt-oss's Hugging Face MXFP4 checkpoint: mlx-lm's sanitize turns the U8
 * blocks into U32 SwitchLinear weights (gate = even rows, up = odd rows of
 * gate_up), the scales likewise, the gate_up bias by even/odd columns. */
static void check_gpt_oss_sanitize(const mnv_st_set *src, const mnv_st_set *out) {
    const char *L = "model.layers.1.mlp.experts.";
    char a[128], b[128];
    snprintf(a, sizeof a, "%sgate_up_proj_blocks", L);
    const mnv_st_tensor *blocks = mnv_st_find(src, a);
    snprintf(a, sizeof a, "%sgate_up_proj_scales", L);
    const mnv_st_tensor *scales = mnv_st_find(src, a);
    snprintf(a, sizeof a, "%sgate_up_proj_bias", L);
    const mnv_st_tensor *bias = mnv_st_find(src, a);
    CHECK(blocks && scales && bias);
    if (!blocks || !scales || !bias) return;
    int64_t E = blocks->shape[0], R = blocks->shape[1], G = blocks->shape[2];
    int bad = 0;
    for (int o = 0; o < 2; o++) {
        const char *part = o ? "up_proj" : "gate_proj";
        snprintf(a, sizeof a, "%s%s.weight", L, part);
        snprintf(b, sizeof b, "%s%s.scales", L, part);
        const mnv_st_tensor *w = mnv_st_find(out, a), *s = mnv_st_find(out, b);
        snprintf(a, sizeof a, "%s%s.bias", L, part);
        const mnv_st_tensor *bb = mnv_st_find(out, a);
        CHECK(w && s && bb);
        if (!w || !s || !bb) return;
        CHECK(w->dtype == MNV_DTYPE_U32 && w->ndim == 3 && w->shape[0] == E && w->shape[1] == R / 2 && w->shape[2] == G * 4);
        CHECK(s->dtype == MNV_DTYPE_U8 && s->ndim == 3 && s->shape[1] == R / 2 && s->shape[2] == G);
        CHECK(bb->ndim == 2 && bb->shape[0] == E && bb->shape[1] == R / 2);
        for (int64_t r = 0; r < E * R / 2; r++) {
            bad += memcmp((const uint8_t *)w->data + r * G * 16, (const uint8_t *)blocks->data + (2 * r + o) * G * 16,
                          (size_t)G * 16) != 0;
            bad += memcmp((const uint8_t *)s->data + r * G, (const uint8_t *)scales->data + (2 * r + o) * G, (size_t)G);
            bad += ((const float *)bb->data)[r] != ((const float *)bias->data)[2 * r + o];
        }
    }
    CHECKF(bad == 0, "%d gpt-oss sanitize mismatches", bad);
}

/* The spec's decoding of the Hugging Face blocks (§3.6), written out here. */
static float mxfp4_blocks_value(const mnv_st_tensor *blocks, const mnv_st_tensor *scales, int64_t e, int64_t r, int64_t k) {
    int64_t R = blocks->shape[1], G = blocks->shape[2];
    uint8_t byte = ((const uint8_t *)blocks->data)[((e * R + r) * G + k / 32) * 16 + (k % 32) / 2];
    uint8_t nib = k % 2 ? byte >> 4 : byte & 15;
    static const float fp4[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
    int s = ((const uint8_t *)scales->data)[(e * R + r) * G + k / 32];
    return ldexpf(fp4[nib], s - 127);
}

static void test_gpt_oss(void) {
    const char *plain = new_dir(), *q8 = new_dir(), *deq = new_dir();
    mnv_status st = convert(FIX "tiny-gptoss-mxfp4", plain, NULL, 0, 0, MNV_DTYPE_COUNT, 0, 0, NULL);
    CHECKF(st == MNV_OK, "gpt-oss: %s", mnv_last_error());
    st = convert(FIX "tiny-gptoss-mxfp4", q8, "affine", 8, 0, MNV_DTYPE_COUNT, 0, 0, NULL);
    CHECKF(st == MNV_OK, "gpt-oss q8: %s", mnv_last_error());
    st = convert(q8, deq, NULL, 0, 0, MNV_DTYPE_COUNT, 1, 0, NULL);
    CHECKF(st == MNV_OK, "gpt-oss dequantize: %s", mnv_last_error());
    mnv_st_set *src = NULL, *out = NULL, *o8 = NULL, *od = NULL;
    CHECK(mnv_st_open_dir(FIX "tiny-gptoss-mxfp4", &src) == MNV_OK && mnv_st_open_dir(plain, &out) == MNV_OK);
    CHECK(mnv_st_open_dir(q8, &o8) == MNV_OK && mnv_st_open_dir(deq, &od) == MNV_OK);
    if (!src || !out || !o8 || !od) goto done;
    check_gpt_oss_sanitize(src, out);
    check_gpt_oss_sanitize(src, o8); /* the experts are carried over untouched */
    cJSON *c1 = read_json(join(plain, "config.json")), *c8 = read_json(join(q8, "config.json"));
    const cJSON *q1 = cJSON_GetObjectItemCaseSensitive(c1, "quantization");
    CHECK(q1 && cJSON_GetArraySize(q1) == 3 && !strcmp(cJSON_GetObjectItemCaseSensitive(q1, "mode")->valuestring, "mxfp4"));
    CHECK(cJSON_Compare(q1, cJSON_GetObjectItemCaseSensitive(c1, "quantization_config"), 1));
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(c8, "quantization");
    CHECK(q && !strcmp(cJSON_GetObjectItemCaseSensitive(q, "mode")->valuestring, "mxfp4")); /* top level kept */
    const cJSON *qp = cJSON_GetObjectItemCaseSensitive(q, "model.layers.0.self_attn.q_proj");
    CHECK(qp && cJSON_GetObjectItemCaseSensitive(qp, "bits")->valueint == 8 &&
          cJSON_GetObjectItemCaseSensitive(qp, "group_size")->valueint == 64 &&
          !strcmp(cJSON_GetObjectItemCaseSensitive(qp, "mode")->valuestring, "affine"));
    const cJSON *router = cJSON_GetObjectItemCaseSensitive(q, "model.layers.2.mlp.router"); /* gpt_oss predicate */
    CHECK(router && cJSON_GetArraySize(router) == 2 && cJSON_GetObjectItemCaseSensitive(router, "bits")->valueint == 8);
    CHECK(cJSON_GetObjectItemCaseSensitive(q, "lm_head") && cJSON_GetObjectItemCaseSensitive(q, "model.embed_tokens"));
    CHECK(!cJSON_GetObjectItemCaseSensitive(q, "model.layers.0.mlp.experts.gate_proj")); /* already quantized */
    CHECK(cJSON_Compare(q, cJSON_GetObjectItemCaseSensitive(c8, "quantization_config"), 1));
    cJSON_Delete(c1);
    cJSON_Delete(c8);
    expect_tensor(o8, "model.layers.0.mlp.router.weight", MNV_DTYPE_U32, 2, 8, 16);
    expect_tensor(o8, "model.layers.0.self_attn.sinks", MNV_DTYPE_F32, 1, 4, 0);
    /* dequantized experts equal the spec's decoding of the original blocks */
    const mnv_st_tensor *blocks = mnv_st_find(src, "model.layers.0.mlp.experts.gate_up_proj_blocks");
    const mnv_st_tensor *scales = mnv_st_find(src, "model.layers.0.mlp.experts.gate_up_proj_scales");
    const mnv_st_tensor *up = mnv_st_find(od, "model.layers.0.mlp.experts.up_proj.weight");
    CHECK(blocks && scales && up && up->ndim == 3 && up->dtype == MNV_DTYPE_F32);
    if (blocks && scales && up) {
        int64_t E = up->shape[0], O = up->shape[1], I = up->shape[2];
        int bad = 0;
        for (int64_t e = 0; e < E; e++)
            for (int64_t r = 0; r < O; r++)
                for (int64_t k = 0; k < I; k++)
                    bad += ((const float *)up->data)[(e * O + r) * I + k] != mxfp4_blocks_value(blocks, scales, e, 2 * r + 1, k);
        CHECKF(bad == 0, "%d dequantized expert values differ", bad);
    }
done:
    mnv_st_close(src);
    mnv_st_close(out);
    mnv_st_close(o8);
    mnv_st_close(od);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static bool same_file(const char *a, const char *b) {
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    bool ok = mnv_read_file(a, &x, &nx) == MNV_OK && mnv_read_file(b, &y, &ny) == MNV_OK && nx == ny &&
              memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return ok;
}

/* Tokenizer and chat-template files are copied, others are not;
 * generation_config's eos list replaces config's eos_token_id (mlx-lm's
 * load_config); a plain conversion casts every float to --dtype. */
static void test_side_files_and_cast(void) {
    char src[256], abs_fix[PATH_MAX];
    snprintf(src, sizeof src, "%s/src_side", tmpdir);
    CHECK(mkdir(src, 0755) == 0);
    CHECK(realpath(FIX "tiny-llama/model.safetensors", abs_fix) != NULL);
    CHECK(symlink(abs_fix, join(src, "model.safetensors")) == 0);
    char *cfg = NULL;
    size_t len = 0;
    CHECK(mnv_read_file(FIX "tiny-llama/config.json", &cfg, &len) == MNV_OK);
    if (cfg) write_file(join(src, "config.json"), cfg);
    free(cfg);
    write_file(join(src, "generation_config.json"), "{\"eos_token_id\": [2, 7], \"do_sample\": true}");
    write_file(join(src, "tokenizer.json"), "{\"model\": {\"type\": \"BPE\"}}");
    write_file(join(src, "tokenizer_config.json"), "{\"chat_template\": \"{{ messages }}\"}");
    write_file(join(src, "chat_template.jinja"), "{% for m in messages %}{{ m.content }}{% endfor %}");
    write_file(join(src, "notes.txt"), "not copied");
    const char *dst = new_dir();
    mnv_status st = convert(src, dst, NULL, 0, 0, MNV_DTYPE_BF16, 0, 0, NULL);
    CHECKF(st == MNV_OK, "side files: %s", mnv_last_error());
    const char *copied[] = {"generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"};
    for (int i = 0; i < 4; i++) CHECKF(same_file(join(src, copied[i]), join(dst, copied[i])), "%s", copied[i]);
    CHECK(!exists(join(dst, "notes.txt")));
    cJSON *c = read_json(join(dst, "config.json"));
    const cJSON *eos = cJSON_GetObjectItemCaseSensitive(c, "eos_token_id");
    CHECK(cJSON_IsArray(eos) && cJSON_GetArraySize(eos) == 2 && cJSON_GetArrayItem(eos, 1)->valueint == 7);
    CHECK(!cJSON_GetObjectItemCaseSensitive(c, "quantization"));
    cJSON_Delete(c);
    mnv_st_set *s = NULL, *o = NULL;
    CHECK(mnv_st_open_dir(src, &s) == MNV_OK && mnv_st_open_dir(dst, &o) == MNV_OK);
    if (s && o) {
        int bad = mnv_st_count(s) != mnv_st_count(o);
        for (size_t i = 0; i < mnv_st_count(s) && !bad; i++) {
            const mnv_st_tensor *a = mnv_st_get(s, i), *b = mnv_st_find(o, a->name);
            bad += !b || b->dtype != MNV_DTYPE_BF16 || b->nbytes * 2 != a->nbytes;
            for (size_t k = 0; b && !bad && k < a->nbytes / 4; k++)
                bad += ((const uint16_t *)b->data)[k] != mnv_f32_to_bf16(((const float *)a->data)[k]);
        }
        CHECKF(bad == 0, "bf16 cast differs");
        check_index(dst, o, source_params(s));
    }
    mnv_st_close(s);
    mnv_st_close(o);
}

/* MLX's writer does not pad the header, so its tensors sit at unaligned
 * offsets: an odd header length misaligns every tensor of a copy of the
 * affine model; converting it must give the same bytes. */
static void test_unaligned_source(void) {
    if (!g_affine4) return;
    char src[256];
    snprintf(src, sizeof src, "%s/src_unaligned", tmpdir);
    CHECK(mkdir(src, 0755) == 0);
    char *data = NULL, *cfg = NULL;
    size_t len = 0, clen = 0;
    CHECK(mnv_read_file(join(g_affine4, "model.safetensors"), &data, &len) == MNV_OK);
    CHECK(mnv_read_file(join(g_affine4, "config.json"), &cfg, &clen) == MNV_OK);
    if (!data || !cfg) goto done;
    uint64_t h = 0;
    for (int i = 0; i < 8; i++) h |= (uint64_t)(uint8_t)data[i] << (8 * i);
    FILE *f = fopen(join(src, "model.safetensors"), "wb");
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)((h + 1) >> (8 * i));
    fwrite(le, 1, 8, f);
    fwrite(data + 8, 1, (size_t)h, f);
    fputc(' ', f);
    fwrite(data + 8 + h, 1, len - 8 - (size_t)h, f);
    fclose(f);
    write_file(join(src, "config.json"), cfg);
    const char *a = new_dir(), *b = new_dir();
    CHECK(convert(g_affine4, a, NULL, 0, 0, MNV_DTYPE_BF16, 1, 0, NULL) == MNV_OK);
    mnv_status st = convert(src, b, NULL, 0, 0, MNV_DTYPE_BF16, 1, 0, NULL);
    CHECKF(st == MNV_OK, "unaligned source: %s", mnv_last_error());
    CHECK(same_file(join(a, "model.safetensors"), join(b, "model.safetensors")));
done:
    free(data);
    free(cfg);
}

static void expect_error(mnv_status st, mnv_status want, const char *frag1, const char *frag2) {
    const char *msg = mnv_last_error();
    CHECKF(st == want, "status %s (want %s): %s", mnv_status_str(st), mnv_status_str(want), msg);
    CHECKF(!frag1 || strstr(msg, frag1), "message lacks '%s': %s", frag1, msg);
    CHECKF(!frag2 || strstr(msg, frag2), "message lacks '%s': %s", frag2, msg);
}

static void test_errors(void) {
    const char *dst = new_dir();
    mnv_status st = convert("fixtures/models/no-such-model", dst, "affine", 4, 32, MNV_DTYPE_COUNT, 0, 0, NULL);
    CHECK(st != MNV_OK && strstr(mnv_last_error(), "no-such-model"));
    CHECK(!exists(dst));
    expect_error(convert(FIX "tiny-llama", dst, "int4", 0, 0, MNV_DTYPE_COUNT, 0, 0, NULL), MNV_ERR_INVALID_ARG,
                 "int4", NULL);
    expect_error(convert(FIX "tiny-llama", dst, "affine", 4, 48, MNV_DTYPE_COUNT, 0, 0, NULL), MNV_ERR_UNSUPPORTED,
                 "48", NULL);
    expect_error(convert(FIX "tiny-llama", dst, "affine", 7, 32, MNV_DTYPE_COUNT, 0, 0, NULL), MNV_ERR_UNSUPPORTED,
                 "7", NULL);
    expect_error(convert(FIX "tiny-llama", dst, "mxfp4", 4, 64, MNV_DTYPE_COUNT, 0, 0, NULL), MNV_ERR_UNSUPPORTED,
                 "mxfp4", "64");
    /* hidden 96 and intermediate 160: no input dimension divides by 64 */
    expect_error(convert(FIX "tiny-llama", dst, "affine", 8, 64, MNV_DTYPE_COUNT, 0, 0, NULL), MNV_ERR_INVALID_ARG,
                 "group size 64", NULL);
    CHECK(!exists(dst)); /* nothing left behind */
    expect_error(convert(FIX "tiny-llama", dst, "affine", 4, 32, MNV_DTYPE_COUNT, 1, 0, NULL), MNV_ERR_INVALID_ARG,
                 "dequantize", NULL);
    expect_error(convert(FIX "tiny-llama", dst, NULL, 0, 0, MNV_DTYPE_I32, 0, 0, NULL), MNV_ERR_INVALID_ARG, "I32", NULL);
    if (g_affine4) {
        expect_error(convert(g_affine4, dst, "affine", 8, 32, MNV_DTYPE_COUNT, 0, 0, NULL), MNV_ERR_INVALID_ARG,
                     "already quantized", NULL);
        expect_error(convert(FIX "tiny-llama", g_affine4, NULL, 0, 0, MNV_DTYPE_COUNT, 0, 0, NULL),
                     MNV_ERR_INVALID_ARG, "not empty", NULL);
        /* a config whose bits disagree with the tensors: the module is named */
        char bad[256], abs_path[PATH_MAX];
        snprintf(bad, sizeof bad, "%s/bad_bits", tmpdir);
        CHECK(mkdir(bad, 0755) == 0);
        CHECK(realpath(join(g_affine4, "model.safetensors"), abs_path) != NULL);
        CHECK(symlink(abs_path, join(bad, "model.safetensors")) == 0);
        cJSON *c = read_json(join(g_affine4, "config.json"));
        cJSON_SetNumberValue(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c, "quantization"), "bits"), 8);
        char *text = cJSON_Print(c);
        write_file(join(bad, "config.json"), text);
        cJSON_free(text);
        cJSON_Delete(c);
        expect_error(convert(bad, dst, NULL, 0, 0, MNV_DTYPE_COUNT, 1, 0, NULL), MNV_ERR_FORMAT, "lm_head", "8-bit");
        CHECK(!exists(dst));
    }
    mnv_convert_params p = mnv_convert_params_default();
    p.src_dir = FIX "tiny-llama";
    p.dst_dir = dst;
    p.size = 8;
    expect_error(mnv_convert(&p), MNV_ERR_INVALID_ARG, "size", NULL);
    expect_error(mnv_convert(NULL), MNV_ERR_INVALID_ARG, NULL, NULL);
    /* transformers' dense gpt-oss layout converts (checked numerically in test_model) */
    CHECKF(convert(FIX "tiny-gptoss-dense", dst, NULL, 0, 0, MNV_DTYPE_COUNT, 0, 0, NULL) == MNV_OK, "dense gpt-oss: %s",
           mnv_last_error());
}

/* The loader reads what the converter writes: a plain conversion gives the
 * source's logits exactly; a quantized one (if the loader takes it) gives
 * logits close to them. */
static void eval_logits(const char *dir, float *logits, mnv_status *st_out) {
    mnv_model *m = NULL;
    mnv_session *s = NULL;
    mnv_model_params mp = mnv_model_params_default();
    mp.n_threads = 2;
    mnv_status st = mnv_model_load(dir, &mp, &m);
    if (!st) st = mnv_session_create(m, NULL, &s);
    const int32_t ids[6] = {1, 17, 42, 99, 200, 383};
    if (!st) st = mnv_session_eval(s, ids, 6, logits);
    mnv_session_free(s);
    mnv_model_free(m);
    *st_out = st;
}

static void test_load_back(void) {
    const size_t n = 6 * 384;
    float *ref = calloc(n, 4), *got = calloc(n, 4);
    mnv_status st;
    eval_logits(FIX "tiny-llama", ref, &st);
    CHECKF(st == MNV_OK, "source: %s", mnv_last_error());
    const char *dst = new_dir();
    CHECK(convert(FIX "tiny-llama", dst, NULL, 0, 0, MNV_DTYPE_COUNT, 0, 0, NULL) == MNV_OK);
    eval_logits(dst, got, &st);
    CHECKF(st == MNV_OK && memcmp(ref, got, n * 4) == 0, "plain conversion: %s", mnv_last_error());
    const char *q8 = new_dir();
    CHECK(convert(FIX "tiny-llama", q8, "affine", 8, 32, MNV_DTYPE_COUNT, 0, 0, NULL) == MNV_OK);
    const char *dq = new_dir(); /* the same weights, dequantized to f32 by the converter */
    CHECK(convert(q8, dq, NULL, 0, 0, MNV_DTYPE_COUNT, 1, 0, NULL) == MNV_OK);
    float *deq = calloc(n, 4);
    eval_logits(dq, deq, &st);
    CHECKF(st == MNV_OK, "dequantized: %s", mnv_last_error());
    /* the portable kernel computes in f32 like the dequantized model; the
     * host's default may round activations to int8 (avx512-vnni, avx2-int8): looser */
    const char *impl[2] = {"scalar", NULL};
    for (int i = 0; i < 2; i++) {
        bool forced = impl[i] ? mnv_cpu_qmatmul_force(impl[i]) : (mnv_cpu_qmatmul_force(NULL), true);
        if (!forced) continue;
        eval_logits(q8, got, &st);
        if (st != MNV_OK) {
            printf("note: the loader did not take the 8-bit model (%s: %s)\n", mnv_status_str(st), mnv_last_error());
            break;
        }
        double e = t_rel_l2(got, deq, n), e_src = t_rel_l2(got, ref, n);
        CHECKF(e < (impl[i] ? 1e-5 : 0.05), "%s: quantized vs dequantized model logits: relative L2 %g",
               mnv_cpu_qmatmul_impl(), e);
        printf("affine 8-bit g32 tiny-llama logits (%s): relative L2 %.2e vs the dequantized model, %.2e vs the source\n",
               mnv_cpu_qmatmul_impl(), e, e_src);
    }
    mnv_cpu_qmatmul_force(NULL);
    free(ref);
    free(got);
    free(deq);
}

int main(void) {
    t_seed();
    snprintf(tmpdir, sizeof tmpdir, "/tmp/mnv_convert_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    test_llama_affine4_mxfp4();
    test_qwen3_affine8_g64();
    test_dequantize();
    test_sharding();
    test_gpt_oss();
    test_side_files_and_cast();
    test_unaligned_source();
    test_errors();
    test_load_back();
    if (!getenv("MNV_KEEP_TMP")) nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    else printf("kept %s\n", tmpdir);
    return t_done();
}
