/* Safetensors: write/read round trips with random data, crafted bad files
 * (each must fail with the right status and a message naming the file and
 * the tensor), unaligned tensors, sharded directories. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ftw.h>
#include <stdio.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "test.h"

static char tmpdir[64];

static char *tpath(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

/* Write a file: u64 header length, the header text, then `data`. */
static void write_raw_n(const char *path, uint64_t hlen, const char *header, const void *data,
                        size_t data_len) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(2);
    }
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)(hlen >> (8 * i));
    fwrite(le, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    if (data_len) fwrite(data, 1, data_len, f);
    fclose(f);
}

static void write_raw(const char *path, const char *header, size_t data_len) {
    static const uint8_t zeros[4096];
    write_raw_n(path, strlen(header), header, zeros, data_len);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) exit(2);
    fputs(text, f);
    fclose(f);
}

/* Open path expecting `want`; the message must contain every given fragment. */
static void expect_fail(const char *path, mnv_status want, const char *frag1, const char *frag2) {
    mnv_st_set *set = (mnv_st_set *)1;
    mnv_status st = mnv_st_open_file(path, &set);
    const char *msg = mnv_last_error();
    CHECKF(st == want, "%s: status %s, want %s (%s)", path, mnv_status_str(st), mnv_status_str(want),
           msg);
    CHECK(set == NULL);
    CHECKF(strstr(msg, path) != NULL, "message lacks the path: %s", msg);
    if (frag1) CHECKF(strstr(msg, frag1) != NULL, "message lacks '%s': %s", frag1, msg);
    if (frag2) CHECKF(strstr(msg, frag2) != NULL, "message lacks '%s': %s", frag2, msg);
    if (st == MNV_OK) mnv_st_close(set);
}

/* ---- round trips ----------------------------------------------------------- */

static const mnv_dtype rt_dtypes[] = {MNV_DTYPE_F32, MNV_DTYPE_F16, MNV_DTYPE_BF16, MNV_DTYPE_U8,
                                      MNV_DTYPE_I64, MNV_DTYPE_U32, MNV_DTYPE_I16, MNV_DTYPE_BOOL};

static size_t wt_bytes(const mnv_st_write_tensor *w) {
    size_t n = mnv_dtype_size(w->dtype);
    for (int d = 0; d < w->ndim; d++) n *= (size_t)w->shape[d];
    return n;
}

static void random_tensor(mnv_st_write_tensor *w, char *name, int i) {
    snprintf(name, 64, "model.layers.%d.w%d", t_randint(0, 99), i);
    w->name = name;
    w->dtype = rt_dtypes[t_randint(0, (int)(sizeof rt_dtypes / sizeof rt_dtypes[0]) - 1)];
    w->ndim = t_randint(0, 4);
    for (int d = 0; d < w->ndim; d++) w->shape[d] = t_randint(i % 7 == 3 ? 0 : 1, 7);
    size_t nb = wt_bytes(w);
    uint8_t *p = malloc(nb ? nb : 1);
    for (size_t b = 0; b < nb; b++) p[b] = (uint8_t)t_rand64();
    w->data = p;
}

static void check_set_matches(const mnv_st_set *set, const mnv_st_write_tensor *w, int n) {
    CHECK(mnv_st_count(set) == (size_t)n);
    for (size_t i = 1; i < mnv_st_count(set); i++)
        CHECK(strcmp(mnv_st_get(set, i - 1)->name, mnv_st_get(set, i)->name) < 0);
    for (int i = 0; i < n; i++) {
        const mnv_st_tensor *t = mnv_st_find(set, w[i].name);
        CHECKF(t != NULL, "tensor %s not found", w[i].name);
        if (!t) continue;
        CHECK(t->dtype == w[i].dtype && t->ndim == w[i].ndim);
        CHECK(memcmp(t->shape, w[i].shape, sizeof(int64_t) * (size_t)w[i].ndim) == 0);
        CHECK(t->nbytes == wt_bytes(&w[i]));
        CHECK((uintptr_t)t->data % mnv_dtype_size(t->dtype) == 0);
        CHECKF(memcmp(t->data, w[i].data, wt_bytes(&w[i])) == 0, "data of %s differs", w[i].name);
    }
}

/* The file on disk: header length 8-aligned, every tensor aligned to its
 * element size, the tensors tiling the buffer with no gap (Hugging Face's
 * reader requires it). */
static void check_layout(const char *path, int n) {
    char *buf;
    size_t len;
    CHECK(mnv_read_file(path, &buf, &len) == MNV_OK);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | (uint8_t)buf[i];
    CHECK(hlen % 8 == 0);
    CHECK(strstr(buf + 8, "{\"__metadata__\":{\"format\":\"pt\"}") == buf + 8);
    mnv_st_tensor *t;
    size_t nt;
    CHECK(mnv_st_parse((const uint8_t *)buf, len, path, &t, &nt) == MNV_OK);
    CHECK(nt == (size_t)n);
    uint64_t total = 0;
    for (size_t i = 0; i < nt; i++) {
        CHECK(((const char *)t[i].data - buf - 8 - (ptrdiff_t)hlen) % (ptrdiff_t)mnv_dtype_size(t[i].dtype) == 0);
        CHECK((const char *)t[i].data + t[i].nbytes <= buf + len);
        total += t[i].nbytes;
    }
    CHECKF(8 + hlen + total == len, "tensors leave gaps: %llu bytes of data in %zu", (unsigned long long)total,
           len - 8 - (size_t)hlen);
    mnv_st_free_tensors(t, nt);
    free(buf);
}

static void test_roundtrip(void) {
    enum { MAXT = 24 };
    static const char *const meta[] = {"format", "pt"};
    for (int round = 0; round < 20; round++) {
        mnv_st_write_tensor w[MAXT];
        char names[MAXT][64];
        int n = t_randint(1, MAXT);
        memset(w, 0, sizeof w);
        for (int i = 0; i < n; i++) random_tensor(&w[i], names[i], i);
        const char *path = tpath("rt.safetensors");
        mnv_status st = mnv_st_write(path, w, (size_t)n, meta, 1);
        CHECKF(st == MNV_OK, "write: %s", mnv_last_error());
        mnv_st_set *set = NULL;
        st = mnv_st_open_file(path, &set);
        CHECKF(st == MNV_OK, "open: %s", mnv_last_error());
        if (set) {
            check_set_matches(set, w, n);
            CHECK(mnv_st_copied_bytes(set) == 0); /* mnv_st_write aligns: zero copy */
            CHECK(strcmp(mnv_st_file_name(set, 0), "rt.safetensors") == 0);
            CHECK(mnv_st_n_files(set) == 1);
            CHECK(mnv_st_get(set, 0)->file_index == 0);
            CHECK(mnv_st_find(set, "absent") == NULL);
            CHECK(mnv_st_get(set, (size_t)n) == NULL);
            CHECK(mnv_st_file_name(set, 1) == NULL && mnv_st_file_name(set, -1) == NULL);
            mnv_st_close(set);
        }
        check_layout(path, n);
        for (int i = 0; i < n; i++) free((void *)w[i].data);
    }
    CHECK(access(tpath("rt.safetensors"), F_OK) == 0);
}

static void test_write_errors(void) {
    float x[4] = {1, 2, 3, 4};
    mnv_st_write_tensor w[2] = {{.name = "a", .dtype = MNV_DTYPE_F32, .ndim = 1, .shape = {4}, .data = x},
                                {.name = "a", .dtype = MNV_DTYPE_F32, .ndim = 1, .shape = {4}, .data = x}};
    CHECK(mnv_st_write(tpath("dup.safetensors"), w, 2, NULL, 0) == MNV_ERR_INVALID_ARG);
    CHECK(strstr(mnv_last_error(), "'a'") != NULL);
    CHECK(access(tpath("dup.safetensors"), F_OK) != 0);
    w[1].name = "b";
    w[1].shape[0] = -4;
    CHECK(mnv_st_write(tpath("neg.safetensors"), w, 2, NULL, 0) == MNV_ERR_INVALID_ARG);
    CHECK(strstr(mnv_last_error(), "'b'") != NULL);
    w[1].shape[0] = 4;
    const char *bad = "/nonexistent-dir-mnv/x.safetensors";
    CHECK(mnv_st_write(bad, w, 2, NULL, 0) == MNV_ERR_IO);
    CHECKF(strstr(mnv_last_error(), bad) != NULL, "%s", mnv_last_error());
    /* names needing escapes survive the round trip; an empty set is valid */
    mnv_st_write_tensor q = {.name = "we\"ird\\name\n", .dtype = MNV_DTYPE_F32, .ndim = 1, .shape = {4}, .data = x};
    mnv_st_set *set = NULL;
    CHECK(mnv_st_write(tpath("esc.safetensors"), &q, 1, NULL, 0) == MNV_OK);
    CHECK(mnv_st_open_file(tpath("esc.safetensors"), &set) == MNV_OK);
    CHECK(mnv_st_find(set, "we\"ird\\name\n") != NULL);
    mnv_st_close(set);
    CHECK(mnv_st_write(tpath("empty.safetensors"), NULL, 0, NULL, 0) == MNV_OK);
    CHECK(mnv_st_open_file(tpath("empty.safetensors"), &set) == MNV_OK);
    CHECK(mnv_st_count(set) == 0);
    mnv_st_close(set);
}

/* ---- crafted bad files --------------------------------------------------------- */

static void test_bad_lengths(void) {
    const char *p = tpath("short.safetensors");
    write_text(p, "abcde");
    expect_fail(p, MNV_ERR_FORMAT, "shorter", NULL);
    write_text(p, "");
    expect_fail(p, MNV_ERR_FORMAT, "shorter", NULL);
    p = tpath("huge.safetensors");
    write_raw_n(p, 1ull << 40, "{}", NULL, 0);
    expect_fail(p, MNV_ERR_FORMAT, "limit", NULL);
    write_raw_n(p, 200000000, "{}", NULL, 0);
    expect_fail(p, MNV_ERR_FORMAT, "limit", NULL);
    write_raw_n(p, 50, "{}", NULL, 0);
    expect_fail(p, MNV_ERR_FORMAT, "header length 50 exceeds the file size", NULL);
    expect_fail(tpath("missing.safetensors"), MNV_ERR_IO, "cannot open", NULL);
}

static void test_bad_json(void) {
    const char *p = tpath("json.safetensors");
    write_raw(p, "{\"a\": ", 0);
    expect_fail(p, MNV_ERR_FORMAT, "not valid JSON", NULL);
    write_raw(p, "[1, 2]", 0);
    expect_fail(p, MNV_ERR_FORMAT, "not a JSON object", NULL);
    write_raw(p, "{} xx", 0);
    expect_fail(p, MNV_ERR_FORMAT, "trailing", NULL);
    write_raw(p, "{\"w\": 5}", 0);
    expect_fail(p, MNV_ERR_FORMAT, "tensor 'w'", "not an object");
    write_raw(p, "{\"__metadata__\": {\"format\": 3}}", 0);
    expect_fail(p, MNV_ERR_FORMAT, "__metadata__", "format");
    write_raw(p, "{\"__metadata__\": {\"format\": \"pt\"}}      ", 0);
    mnv_st_set *set = NULL;
    CHECKF(mnv_st_open_file(p, &set) == MNV_OK, "%s", mnv_last_error());
    CHECK(mnv_st_count(set) == 0);
    mnv_st_close(set);
}

typedef struct {
    const char *header;
    size_t data_len;
    mnv_status want;
    const char *frag1, *frag2;
} bad_case;

static void test_bad_fields(void) {
    static const bad_case cases[] = {
        {"{\"x\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, MNV_ERR_FORMAT, "tensor 'x'", "missing dtype"},
        {"{\"x\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, MNV_ERR_FORMAT, "tensor 'x'", "dtype"},
        {"{\"x\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, MNV_ERR_FORMAT, "tensor 'x'", "unknown dtype 'Q4'"},
        {"{\"x\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, MNV_ERR_UNSUPPORTED, "tensor 'x'", "F8_E4M3"},
        {"{\"neg\":{\"dtype\":\"F32\",\"shape\":[-1,4],\"data_offsets\":[0,4]}}", 4, MNV_ERR_FORMAT, "tensor 'neg'", "dimension 0"},
        {"{\"flt\":{\"dtype\":\"F32\",\"shape\":[2,2.5],\"data_offsets\":[0,20]}}", 20, MNV_ERR_FORMAT, "tensor 'flt'", "dimension 1"},
        {"{\"big\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,4]}}", 4, MNV_ERR_FORMAT, "tensor 'big'", "dimension 0"},
        {"{\"str\":{\"dtype\":\"F32\",\"shape\":[\"4\"],\"data_offsets\":[0,16]}}", 16, MNV_ERR_FORMAT, "tensor 'str'", "dimension 0"},
        {"{\"ov\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,4]}}", 4, MNV_ERR_FORMAT, "tensor 'ov'", "overflows"},
        {"{\"d9\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1, MNV_ERR_UNSUPPORTED, "tensor 'd9'", "9 dimensions"},
        {"{\"ns\":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,16]}}", 16, MNV_ERR_FORMAT, "tensor 'ns'", "shape is not an array"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[5,6],\"data_offsets\":[0,100]}}", 120,  MNV_ERR_FORMAT,
         "tensor 'x': data_offsets [0, 100] hold 100 bytes but shape [5, 6] of F32 needs 120", NULL},
        {"{\"eof\":{\"dtype\":\"F32\",\"shape\":[100],\"data_offsets\":[0,400]}}", 200, MNV_ERR_FORMAT, "tensor 'eof'", "beyond buffer size 200"},
        {"{\"rev\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,4]}}", 16, MNV_ERR_FORMAT, "tensor 'rev'", "begin > end"},
        {"{\"o3\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4,8]}}", 16, MNV_ERR_FORMAT, "tensor 'o3'", "data_offsets"},
        {"{\"on\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[-4,0]}}", 16, MNV_ERR_FORMAT, "tensor 'on'", "data_offsets"},
        {"{\"om\":{\"dtype\":\"U8\",\"shape\":[4]}}", 16, MNV_ERR_FORMAT, "tensor 'om'", "missing data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 24, MNV_ERR_FORMAT, "tensor 'b'", "overlaps tensor 'a'"},
        {"{\"in\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6]},"
         "\"out\":{\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[0,16]}}", 16, MNV_ERR_FORMAT, "'in'", "'out'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, MNV_ERR_FORMAT, "tensor 'a'", "twice"},
    };
    const char *p = tpath("bad.safetensors");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_raw(p, cases[i].header, cases[i].data_len);
        expect_fail(p, cases[i].want, cases[i].frag1, cases[i].frag2);
    }
}

/* Legal oddities: scalars, empty tensors sharing an offset, gaps, no padding. */
static void test_legal_oddities(void) {
    const char *p = tpath("odd.safetensors");
    write_raw(p,
              "{\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
              "\"e1\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]},"
              "\"e2\":{\"dtype\":\"BF16\",\"shape\":[3,0],\"data_offsets\":[4,4]},"
              "\"g\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[12,14]}}",
              16);
    mnv_st_set *set = NULL;
    CHECKF(mnv_st_open_file(p, &set) == MNV_OK, "%s", mnv_last_error());
    CHECK(mnv_st_count(set) == 4);
    const mnv_st_tensor *s = mnv_st_find(set, "s");
    CHECK(s && s->ndim == 0 && s->nbytes == 4);
    CHECK(mnv_st_find(set, "e2") && mnv_st_find(set, "e2")->nbytes == 0);
    mnv_st_close(set);
}

/* MLX-style unaligned tensors load (copied into aligned memory) with exact values. */
static void test_unaligned(void) {
    /* pad the header so the buffer starts at a file offset of 1 mod 4 */
    char header[160];
    snprintf(header, sizeof header, "%s",
             "{\"f\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},"
             "\"h\":{\"dtype\":\"I16\",\"shape\":[2],\"data_offsets\":[12,16]}}");
    size_t hl = strlen(header);
    while ((8 + hl) % 4 != 1) header[hl++] = ' ';
    header[hl] = 0;
    uint8_t data[16] = {0};
    float fv[3] = {1.5f, -2.25f, 1e-3f};
    int16_t hv[2] = {-12345, 321};
    memcpy(data, fv, 12);
    memcpy(data + 12, hv, 4);
    const char *p = tpath("unaligned.safetensors");
    write_raw_n(p, hl, header, data, sizeof data);
    mnv_st_set *set = NULL;
    CHECKF(mnv_st_open_file(p, &set) == MNV_OK, "%s", mnv_last_error());
    if (!set) return;
    const mnv_st_tensor *f = mnv_st_find(set, "f"), *h = mnv_st_find(set, "h");
    CHECK(f && h);
    if (f && h) {
        CHECK((uintptr_t)f->data % 4 == 0 && (uintptr_t)h->data % 2 == 0);
        CHECK(memcmp(f->data, fv, 12) == 0 && memcmp(h->data, hv, 4) == 0);
        CHECK(((const float *)f->data)[1] == -2.25f && ((const int16_t *)h->data)[0] == -12345);
    }
    CHECK(mnv_st_copied_bytes(set) == 16);
    mnv_st_close(set);
}

/* ---- directories ------------------------------------------------------------- */

static void make_dir(const char *name) {
    char *p = tpath(name);
    CHECK(mkdir(p, 0755) == 0);
}

static void write_shard(const char *dir, const char *file, const char *const *names, int n,
                        float base) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s/%s", tmpdir, dir, file);
    mnv_st_write_tensor w[8];
    static float vals[8][6];
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < 6; k++) vals[i][k] = base + (float)(i * 10 + k);
        w[i] = (mnv_st_write_tensor){.name = names[i], .dtype = MNV_DTYPE_F32, .ndim = 2,
                                     .shape = {2, 3}, .data = vals[i]};
    }
    CHECKF(mnv_st_write(path, w, (size_t)n, NULL, 0) == MNV_OK, "%s", mnv_last_error());
}

static void write_index(const char *dir, const char *weight_map) {
    char path[512], text[2048];
    snprintf(path, sizeof path, "%s/%s/model.safetensors.index.json", tmpdir, dir);
    snprintf(text, sizeof text, "{\"metadata\": {\"total_size\": 96}, \"weight_map\": %s}", weight_map);
    write_text(path, text);
}

static void expect_dir_fail(const char *dir, mnv_status want, const char *frag1, const char *frag2) {
    mnv_st_set *set = (mnv_st_set *)1;
    mnv_status st = mnv_st_open_dir(tpath(dir), &set);
    const char *msg = mnv_last_error();
    CHECKF(st == want, "%s: status %s, want %s (%s)", dir, mnv_status_str(st), mnv_status_str(want), msg);
    CHECK(set == NULL);
    if (frag1) CHECKF(strstr(msg, frag1) != NULL, "message lacks '%s': %s", frag1, msg);
    if (frag2) CHECKF(strstr(msg, frag2) != NULL, "message lacks '%s': %s", frag2, msg);
}

static const char *const shard1[] = {"model.embed_tokens.weight", "model.layers.0.w"};
static const char *const shard2[] = {"lm_head.weight", "model.norm.weight"};
#define S1 "model-00001-of-00002.safetensors"
#define S2 "model-00002-of-00002.safetensors"

static void test_sharded(void) {
    make_dir("sharded");
    write_shard("sharded", S1, shard1, 2, 0);
    write_shard("sharded", S2, shard2, 2, 100);
    write_index("sharded", "{\"lm_head.weight\": \"" S2 "\", \"model.embed_tokens.weight\": \"" S1
                           "\", \"model.layers.0.w\": \"" S1 "\", \"model.norm.weight\": \"" S2 "\"}");
    mnv_st_set *set = NULL;
    CHECKF(mnv_st_open_dir(tpath("sharded"), &set) == MNV_OK, "%s", mnv_last_error());
    if (set) {
        CHECK(mnv_st_count(set) == 4 && mnv_st_n_files(set) == 2);
        const mnv_st_tensor *t = mnv_st_find(set, "model.norm.weight");
        CHECK(t && strcmp(mnv_st_file_name(set, t->file_index), S2) == 0);
        CHECK(t && ((const float *)t->data)[4] == 114.0f);
        t = mnv_st_find(set, "model.layers.0.w");
        CHECK(t && strcmp(mnv_st_file_name(set, t->file_index), S1) == 0);
        CHECK(t && ((const float *)t->data)[5] == 15.0f);
        CHECK(strcmp(mnv_st_get(set, 0)->name, "lm_head.weight") == 0);
        mnv_st_close(set);
    }
    /* a shard the index names is missing */
    write_index("sharded", "{\"lm_head.weight\": \"" S2 "\", \"x\": \"model-00003-of-00003.safetensors\"}");
    expect_dir_fail("sharded", MNV_ERR_IO, "model-00003-of-00003.safetensors", "model.safetensors.index.json");
    /* a tensor listed but absent, or listed for the wrong shard */
    write_index("sharded", "{\"ghost\": \"" S1 "\"}");
    expect_dir_fail("sharded", MNV_ERR_FORMAT, "'ghost'", S1);
    write_index("sharded", "{\"lm_head.weight\": \"" S1 "\", \"model.layers.0.w\": \"" S2 "\"}");
    expect_dir_fail("sharded", MNV_ERR_FORMAT, "'", "but is in");
    write_index("sharded", "{\"lm_head.weight\": 3}");
    expect_dir_fail("sharded", MNV_ERR_FORMAT, "'lm_head.weight'", "not a string");
    write_index("sharded", "{\"lm_head.weight\": \"../../etc/passwd\"}");
    expect_dir_fail("sharded", MNV_ERR_FORMAT, "'lm_head.weight'", "bad shard name");
    write_index("sharded", "[]");
    expect_dir_fail("sharded", MNV_ERR_FORMAT, "weight_map", NULL);
    write_text(tpath("sharded/model.safetensors.index.json"), "{\"weight_map\": {");
    expect_dir_fail("sharded", MNV_ERR_FORMAT, "not valid JSON", NULL);
    /* without an index, every model*.safetensors is read */
    CHECK(remove(tpath("sharded/model.safetensors.index.json")) == 0);
    CHECKF(mnv_st_open_dir(tpath("sharded"), &set) == MNV_OK, "%s", mnv_last_error());
    CHECK(mnv_st_count(set) == 4 && mnv_st_n_files(set) == 2);
    mnv_st_close(set);
    /* a name held by two shards */
    write_shard("sharded", "model-extra.safetensors", shard2 + 1, 1, 7);
    expect_dir_fail("sharded", MNV_ERR_FORMAT, "'model.norm.weight'", "model-extra.safetensors");
}

static void test_dir_fallbacks(void) {
    make_dir("single");
    write_shard("single", "model.safetensors", shard1, 2, 0);
    write_shard("single", "model-other.safetensors", shard2, 2, 0); /* ignored: model.safetensors wins */
    mnv_st_set *set = NULL;
    CHECKF(mnv_st_open_dir(tpath("single"), &set) == MNV_OK, "%s", mnv_last_error());
    CHECK(mnv_st_count(set) == 2 && mnv_st_n_files(set) == 1);
    CHECK(strcmp(mnv_st_file_name(set, 0), "model.safetensors") == 0);
    mnv_st_close(set);
    make_dir("empty");
    write_text(tpath("empty/weights.bin"), "x");
    expect_dir_fail("empty", MNV_ERR_IO, "no model.safetensors", NULL);
    expect_dir_fail("no-such-dir", MNV_ERR_IO, "no-such-dir", NULL);
    /* a corrupt shard is reported with its path */
    make_dir("corrupt");
    write_text(tpath("corrupt/model.safetensors"), "xy");
    expect_dir_fail("corrupt", MNV_ERR_FORMAT, "corrupt/model.safetensors", "shorter");
}

/* In-memory parsing: sorted output, pointers into the caller's buffer. */
static void test_parse_memory(void) {
    const char *h = "{\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                    "\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}";
    size_t hl = strlen(h);
    uint8_t buf[256] = {0};
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(hl >> (8 * i));
    memcpy(buf + 8, h, hl);
    buf[8 + hl + 2] = 42;
    mnv_st_tensor *t = NULL;
    size_t n = 0;
    CHECK(mnv_st_parse(buf, 8 + hl + 4, "mem", &t, &n) == MNV_OK);
    CHECK(n == 2 && strcmp(t[0].name, "a") == 0 && strcmp(t[1].name, "b") == 0);
    CHECK(n == 2 && t[0].data == buf + 8 + hl + 2 && *(const uint8_t *)t[0].data == 42);
    mnv_st_free_tensors(t, n);
    CHECK(mnv_st_parse(buf, 8 + hl + 3, "mem", &t, &n) == MNV_ERR_FORMAT);
    CHECK(t == NULL && n == 0 && strstr(mnv_last_error(), "mem: tensor 'a'"));
    CHECK(mnv_st_parse(NULL, 0, "mem", &t, &n) == MNV_ERR_FORMAT);
}

int main(void) {
    t_seed();
    snprintf(tmpdir, sizeof tmpdir, "/tmp/mnv_st_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    test_roundtrip();
    test_write_errors();
    test_bad_lengths();
    test_bad_json();
    test_bad_fields();
    test_legal_oddities();
    test_unaligned();
    test_sharded();
    test_dir_fallbacks();
    test_parse_memory();
    nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return t_done();
}
