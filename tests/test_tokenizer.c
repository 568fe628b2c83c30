/* Tokenizer tests: ids and decoded text against fixtures produced with
 * Hugging Face `tokenizers` (tests/fixtures/tokenizer/<name>.json, one entry
 * per string of corpus.json), streaming decode against whole decode, a
 * hand-checked tiny BPE, API edge cases, and clear errors on broken files.
 * Run from tests/ (fixture and model paths are relative). */
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core.h"
#include "minerva.h"
#include "test.h"
#include "tokenizer/tokenizer.h" /* mnv__utf8_valid */

#define CORPUS "fixtures/tokenizer/corpus.json"

static cJSON *read_json(const char *path) {
    char *doc;
    size_t len;
    if (mnv_read_file(path, &doc, &len) != MNV_OK) return NULL;
    cJSON *j = cJSON_ParseWithLength(doc, len);
    free(doc);
    return j;
}

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* Encode into a heap array (NULL on failure). */
static int32_t *encode(const mnv_tokenizer *t, const char *s, size_t len, int add_bos, size_t *n) {
    size_t cap = len * 2 + 16;
    int32_t *ids = malloc(cap * sizeof *ids);
    mnv_status st = mnv_tokenize(t, s, len, add_bos, ids, cap, n);
    if (st != MNV_OK) {
        fprintf(stderr, "mnv_tokenize: %s: %s\n", mnv_status_str(st), mnv_last_error());
        free(ids);
        return NULL;
    }
    return ids;
}

static char *decode(const mnv_tokenizer *t, const int32_t *ids, size_t n, int skip) {
    size_t len = 0;
    mnv_detokenize(t, ids, n, skip, NULL, 0, &len);
    char *s = malloc(len + 1);
    mnv_status st = mnv_detokenize(t, ids, n, skip, s, len + 1, &len);
    if (st != MNV_OK) {
        fprintf(stderr, "mnv_detokenize: %s: %s\n", mnv_status_str(st), mnv_last_error());
        free(s);
        return NULL;
    }
    return s;
}

/* Concatenation of a streaming decode (push every id, then flush). Also
 * checks that each push emits whole UTF-8 characters only. */
static char *stream_decode(const mnv_tokenizer *t, const int32_t *ids, size_t n, bool *whole) {
    mnv_detok_stream *s;
    if (mnv_detok_stream_create(t, &s) != MNV_OK) return NULL;
    size_t len = 0, got;
    char *all = malloc(1), piece[4096];
    *whole = true;
    for (size_t i = 0; i <= n; i++) {
        mnv_status st = i < n ? mnv_detok_stream_push(s, ids[i], piece, sizeof piece, &got)
                              : mnv_detok_stream_flush(s, piece, sizeof piece, &got);
        if (st != MNV_OK) {
            fprintf(stderr, "stream: %s: %s\n", mnv_status_str(st), mnv_last_error());
            free(all);
            mnv_detok_stream_free(s);
            return NULL;
        }
        if (!mnv__utf8_valid(piece, got, NULL)) *whole = false;
        all = realloc(all, len + got + 1);
        memcpy(all + len, piece, got);
        len += got;
    }
    all[len] = 0;
    mnv_detok_stream_free(s);
    return all;
}

static bool ids_equal(const int32_t *a, size_t na, const cJSON *want) {
    if ((size_t)cJSON_GetArraySize(want) != na) return false;
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, want) {
        if (!cJSON_IsNumber(e) || (int32_t)e->valuedouble != a[i]) return false;
        i++;
    }
    return true;
}

static void print_ids(const char *label, const int32_t *a, size_t n) {
    fprintf(stderr, "    %s:", label);
    for (size_t i = 0; i < n && i < 60; i++) fprintf(stderr, " %d", a[i]);
    fprintf(stderr, n > 60 ? " ...\n" : "\n");
}

static void print_want(const cJSON *want) {
    fprintf(stderr, "    want:");
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, want) if (i++ < 60) fprintf(stderr, " %d", (int)e->valuedouble);
    fprintf(stderr, "\n");
}

static const char *fx_str(const cJSON *fx, const char *key, int i) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(fx, key);
    const cJSON *s = cJSON_GetArrayItem(a, i);
    return cJSON_IsString(s) ? s->valuestring : NULL;
}

typedef struct {
    int ids, dec, dec_skip, stream, total;
} tally;

static void check_string(const char *name, const mnv_tokenizer *t, const cJSON *fx, int i,
                         const char *text, tally *ty) {
    size_t n;
    int32_t *ids = encode(t, text, strlen(text), 0, &n);
    CHECKF(ids != NULL, "%s: corpus[%d] does not encode", name, i);
    if (!ids) return;
    const cJSON *want = fx ? cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(fx, "ids"), i) : NULL;
    char *d = decode(t, ids, n, 0), *ds = decode(t, ids, n, 1);
    bool whole;
    char *st = stream_decode(t, ids, n, &whole);
    if (want) {
        bool ok = ids_equal(ids, n, want);
        ty->ids += ok;
        CHECKF(ok, "%s: corpus[%d] ids differ from HF", name, i);
        if (!ok) {
            print_ids("got ", ids, n);
            print_want(want);
        }
        const char *wd = fx_str(fx, "decoded", i), *wds = fx_str(fx, "decoded_skip", i);
        ok = d && wd && !strcmp(d, wd);
        ty->dec += ok;
        CHECKF(ok, "%s: corpus[%d] decode: got \"%s\" want \"%s\"", name, i, d ? d : "(null)",
               wd ? wd : "(null)");
        ok = ds && wds && !strcmp(ds, wds);
        ty->dec_skip += ok;
        CHECKF(ok, "%s: corpus[%d] decode(skip_special): got \"%s\" want \"%s\"", name, i,
               ds ? ds : "(null)", wds ? wds : "(null)");
    }
    bool ok = st && d && !strcmp(st, d) && whole;
    ty->stream += ok;
    CHECKF(ok, "%s: corpus[%d] stream \"%s\" != decode \"%s\"", name, i, st ? st : "(null)",
           d ? d : "(null)");
    ty->total++;
    free(ids);
    free(d);
    free(ds);
    free(st);
}

/* Byte-level tokenizers: a stream of random ids decodes exactly like decode
 * (the same lossy UTF-8 rule), whatever bytes they hold. */
static void random_stream(const char *name, const mnv_tokenizer *t) {
    int32_t ids[64];
    int bad = 0;
    for (int r = 0; r < 200; r++) {
        size_t n = (size_t)t_randint(1, 64);
        for (size_t i = 0; i < n; i++) ids[i] = t_randint(0, mnv_tokenizer_n_vocab(t) - 1);
        char *d = decode(t, ids, n, 0);
        bool whole;
        char *s = stream_decode(t, ids, n, &whole);
        if (!d || !s || strcmp(d, s) || !whole) bad++;
        free(d);
        free(s);
    }
    CHECKF(bad == 0, "%s: %d of 200 random id streams differ from decode", name, bad);
}

/* Random text from a pool of awkward characters encodes and decodes back to
 * itself (NFC-normalized when the tokenizer normalizes; without U+2581 for
 * SentencePiece-style tokenizers, where it decodes as a space). */
static void random_roundtrip(const char *name, const mnv_tokenizer *t, bool nfc, bool meta) {
    static const char *pool[] = {"a", "Z", "7", " ", "  ", "\n", "\t", "\r\n", "'s", "'LL", ".", "!!",
                                 "\xC3\xA9", "e\xCC\x81", "\xE4\xB8\xAD", "\xE3\x81\x82",
                                 "\xF0\x9F\x98\x80", "\xE2\x80\x8D", "\xC2\xA0", "\xD0\x96",
                                 "\xE0\xA4\xB9\xE0\xA5\x8D", "\xF0\x9D\x94\x98", "123", "_",
                                 "\xEF\xBF\xBD", "\xE2\x96\x81", "<", "|", "\\", "\""};
    int bad = 0;
    for (int r = 0; r < 300; r++) {
        char text[512];
        size_t len = 0;
        int k = t_randint(0, 40);
        for (int i = 0; i < k; i++) {
            const char *p = pool[t_randint(0, (int)(sizeof pool / sizeof *pool) - 1)];
            if (meta && !strcmp(p, "\xE2\x96\x81")) p = "x"; /* U+2581 decodes as a space */
            memcpy(text + len, p, strlen(p));
            len += strlen(p);
        }
        text[len] = 0;
        size_t n;
        int32_t *ids = encode(t, text, len, 0, &n);
        char *d = ids ? decode(t, ids, n, 0) : NULL;
        mnv__buf want = {0};
        if (nfc) mnv__normalize_nf(text, len, true, &want);
        else mnv__buf_put(&want, text, len);
        if (!d || strlen(d) != want.len || (want.len && memcmp(d, want.p, want.len))) {
            if (bad++ < 3) fprintf(stderr, "%s: round trip of \"%s\" gave \"%s\"\n", name, text,
                                   d ? d : "(null)");
        }
        mnv__buf_free(&want);
        free(ids);
        free(d);
    }
    CHECKF(bad == 0, "%s: %d of 300 random texts do not round-trip", name, bad);
}

static void test_tokenizer(const char *name, const char *path, const cJSON *corpus, bool byte_level) {
    if (!exists(path)) {
        printf("SKIP: %s not present\n", path);
        return;
    }
    double t0 = mnv_time_sec();
    mnv_tokenizer *t = NULL;
    mnv_status st = mnv_tokenizer_load(path, &t);
    double ms = (mnv_time_sec() - t0) * 1e3;
    CHECKF(st == MNV_OK, "%s: load: %s: %s", path, mnv_status_str(st), mnv_last_error());
    if (st != MNV_OK) return;
    printf("%s: loaded %s in %.1f ms (n_vocab %d, bos %d, eos %d, add_bos %d)\n", name, path, ms,
           mnv_tokenizer_n_vocab(t), mnv_tokenizer_bos(t), mnv_tokenizer_eos(t),
           mnv_tokenizer_add_bos(t));
    char fx_path[256];
    snprintf(fx_path, sizeof fx_path, "fixtures/tokenizer/%s.json", name);
    cJSON *fx = read_json(fx_path);
    if (!fx) printf("SKIP: %s not present: ids/decode not compared with HF\n", fx_path);
    tally ty = {0};
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, corpus) {
        if (cJSON_IsString(e)) check_string(name, t, fx, i, e->valuestring, &ty);
        i++;
    }
    if (fx)
        printf("%s: ids %d/%d, decoded %d/%d, decoded_skip %d/%d, stream %d/%d match\n", name,
               ty.ids, ty.total, ty.dec, ty.total, ty.dec_skip, ty.total, ty.stream, ty.total);
    else
        printf("%s: stream %d/%d match decode\n", name, ty.stream, ty.total);
    if (byte_level) random_stream(name, t);
    random_roundtrip(name, t, !strcmp(name, "qwen3"), !byte_level);
    cJSON_Delete(fx);
    mnv_tokenizer_free(t);
}

/* ---- specific vectors ------------------------------------------------------------------ */

static bool ids_are(const int32_t *a, size_t n, const int32_t *want, size_t nw) {
    return a && n == nw && !memcmp(a, want, n * sizeof *a);
}

/* The harmony example from openai/harmony docs/format.md (spec §4.2). */
static void test_gptoss_harmony(void) {
    const char *path = "../../shared/tokenizers/gptoss/tokenizer.json";
    mnv_tokenizer *t;
    if (!exists(path) || mnv_tokenizer_load(path, &t) != MNV_OK) return;
    const char *text = "<|channel|>analysis<|message|>User asks: \"What is 2 + 2?\" Simple "
                       "arithmetic. Provide answer.<|end|><|start|>assistant<|channel|>final"
                       "<|message|>2 + 2 = 4.<|return|>";
    static const int32_t want[] = {200005, 35644, 200008, 1844, 31064, 25, 392, 4827, 382, 220,
                                   17, 659, 220, 17, 16842, 12295, 81645, 13, 51441, 6052, 13,
                                   200007, 200006, 173781, 200005, 17196, 200008, 17, 659, 220,
                                   17, 314, 220, 19, 13, 200002};
    size_t n;
    int32_t *ids = encode(t, text, strlen(text), 0, &n);
    CHECKF(ids_are(ids, n, want, sizeof want / sizeof *want), "gptoss: harmony example ids");
    char *d = decode(t, ids, n, 0);
    CHECK(d && !strcmp(d, text));
    free(d);
    d = decode(t, ids, n, 1);
    CHECK(d && !strncmp(d, "analysisUser asks:", 18));
    free(d);
    CHECK(mnv_tokenizer_bos(t) == 199998 && mnv_tokenizer_eos(t) == 200002);
    CHECK(mnv_tokenizer_add_bos(t) == 0 && mnv_tokenizer_n_vocab(t) == 200019);
    free(ids);
    mnv_tokenizer_free(t);
}

static void test_stories_api(void) {
    mnv_tokenizer *t;
    mnv_status st = mnv_tokenizer_load("../models/stories260K/tokenizer.json", &t);
    CHECKF(st == MNV_OK, "stories260K: %s", mnv_last_error());
    if (st != MNV_OK) return;
    CHECK(mnv_tokenizer_bos(t) == 1 && mnv_tokenizer_eos(t) == 2 && mnv_tokenizer_add_bos(t) == 1);
    CHECK(mnv_tokenizer_n_vocab(t) == 512);
    size_t n;
    int32_t ids[64];
    CHECK(mnv_tokenize(t, "Hello", 5, 1, ids, 64, &n) == MNV_OK && n >= 2 && ids[0] == 1);
    /* too small a buffer: BUFFER_TOO_SMALL with the needed count; bad ids are RANGE */
    size_t need = n;
    CHECK(mnv_tokenize(t, "Hello", 5, 1, ids, 1, &n) == MNV_ERR_BUFFER_TOO_SMALL && n == need);
    CHECK(mnv_tokenize(t, "", 0, 0, NULL, 0, &n) == MNV_OK && n == 0);
    /* decode: bad ids name the id */
    char buf[64];
    size_t len;
    int32_t bad[] = {5, 512};
    CHECK(mnv_detokenize(t, bad, 2, 0, buf, sizeof buf, &len) == MNV_ERR_RANGE);
    CHECKF(strstr(mnv_last_error(), "512") != NULL, "error names the id: %s", mnv_last_error());
    int32_t neg = -3;
    CHECK(mnv_detokenize(t, &neg, 1, 0, buf, sizeof buf, &len) == MNV_ERR_RANGE);
    /* a sizing call with a bad id is RANGE, not a request for a larger buffer */
    CHECK(mnv_detokenize(t, bad, 2, 0, NULL, 0, &len) == MNV_ERR_RANGE && len == 0);
    CHECK(!strcmp(mnv_status_str(MNV_ERR_BUFFER_TOO_SMALL), "buffer too small"));
    /* leading space of the first token only; byte-fallback bytes fused */
    int32_t hi[] = {1, 260};
    CHECK(mnv_detokenize(t, hi, 2, 1, buf, sizeof buf, &len) == MNV_OK && !strcmp(buf, "he"));
    CHECK(mnv_detokenize(t, hi, 2, 1, buf, 2, &len) == MNV_ERR_BUFFER_TOO_SMALL && len == 2);
    int32_t euro[] = {265, 229, 133, 175}; /* "▁the" E2 82 AC */
    CHECK(mnv_detokenize(t, euro, 4, 0, buf, sizeof buf, &len) == MNV_OK &&
          !strcmp(buf, "the\xE2\x82\xAC"));
    int32_t cut[] = {265, 229, 133}; /* incomplete: HF gives one U+FFFD per byte */
    CHECK(mnv_detokenize(t, cut, 3, 0, buf, sizeof buf, &len) == MNV_OK &&
          !strcmp(buf, "the\xEF\xBF\xBD\xEF\xBF\xBD"));
    /* streaming: no half characters; too small a buffer can be retried */
    mnv_detok_stream *s;
    CHECK(mnv_detok_stream_create(t, &s) == MNV_OK);
    CHECK(mnv_detok_stream_push(s, 265, buf, sizeof buf, &len) == MNV_OK && len == 3 &&
          !memcmp(buf, "the", 3));
    CHECK(mnv_detok_stream_push(s, 229, buf, sizeof buf, &len) == MNV_OK && len == 0);
    CHECK(mnv_detok_stream_push(s, 133, buf, sizeof buf, &len) == MNV_OK && len == 0);
    CHECK(mnv_detok_stream_push(s, 175, buf, 2, &len) == MNV_ERR_BUFFER_TOO_SMALL && len == 3);
    CHECK(mnv_detok_stream_push(s, 175, buf, sizeof buf, &len) == MNV_OK && len == 3 &&
          !memcmp(buf, "\xE2\x82\xAC", 3));
    CHECK(mnv_detok_stream_push(s, 229, buf, sizeof buf, &len) == MNV_OK && len == 0);
    CHECK(mnv_detok_stream_flush(s, buf, sizeof buf, &len) == MNV_OK && len == 3 &&
          !memcmp(buf, "\xEF\xBF\xBD", 3));
    CHECK(mnv_detok_stream_push(s, 9999, buf, sizeof buf, &len) == MNV_ERR_RANGE);
    mnv_detok_stream_free(s);
    /* invalid UTF-8 input is read as U+FFFD, never a crash */
    CHECK(mnv_tokenize(t, "a\xFF\xC3(b", 5, 0, ids, 64, &n) == MNV_OK && n > 0);
    mnv_tokenizer_free(t);
}

/* ---- crafted files ----------------------------------------------------------------------- */

static char tmpdir[64];

static const char *write_file(const char *name, const char *text) {
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
    return path;
}

static void expect_error(const char *label, const char *json, mnv_status want, const char *needle) {
    char name[64];
    snprintf(name, sizeof name, "%s.json", label);
    const char *path = write_file(name, json);
    mnv_tokenizer *t = (mnv_tokenizer *)1;
    mnv_status st = mnv_tokenizer_load(path, &t);
    CHECKF(st == want && t == NULL, "%s: status %s (want %s), %s", label, mnv_status_str(st),
           mnv_status_str(want), mnv_last_error());
    CHECKF(strstr(mnv_last_error(), needle) != NULL, "%s: message '%s' lacks '%s'", label,
           mnv_last_error(), needle);
    if (st == MNV_OK) mnv_tokenizer_free(t);
}

/* ---- Metaspace and added-token flags, on variants of the stories260K file ------------- */

static mnv_tokenizer *load_variant(const char *name, cJSON *j) {
    char *txt = cJSON_PrintUnformatted(j);
    const char *path = write_file(name, txt);
    free(txt);
    mnv_tokenizer *t = NULL;
    mnv_status st = mnv_tokenizer_load(path, &t);
    CHECKF(st == MNV_OK, "%s: %s", name, mnv_last_error());
    unlink(path);
    return t;
}

static cJSON *metaspace(const char *scheme, bool split) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "type", "Metaspace");
    cJSON_AddStringToObject(m, "replacement", "\xe2\x96\x81");
    cJSON_AddStringToObject(m, "prepend_scheme", scheme);
    cJSON_AddBoolToObject(m, "split", split);
    return m;
}

/* Prepend+Replace normalizers and a Metaspace(always) pre-tokenizer give the
 * same ids unless a piece starts with a space (Prepend adds a second U+2581). */
static void test_metaspace(const cJSON *corpus) {
    cJSON *base = read_json("../models/stories260K/tokenizer.json");
    cJSON *fx = read_json("fixtures/tokenizer/stories260k.json");
    if (!base || !fx) {
        printf("SKIP: metaspace variants (stories260K tokenizer or fixture missing)\n");
        cJSON_Delete(base);
        cJSON_Delete(fx);
        return;
    }
    cJSON_ReplaceItemInObject(base, "normalizer", cJSON_CreateNull());
    static const char *schemes[] = {"always", "first", "never"};
    mnv_tokenizer *t[3][2];
    for (int k = 0; k < 6; k++) {
        cJSON_ReplaceItemInObject(base, "pre_tokenizer", metaspace(schemes[k / 2], k % 2));
        cJSON_ReplaceItemInObject(base, "decoder", metaspace(schemes[k / 2], k % 2));
        t[k / 2][k % 2] = load_variant("meta.json", base);
    }
    int same = 0, total = 0, i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, corpus) {
        const char *s = e->valuestring;
        const cJSON *want = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(fx, "ids"), i++);
        if (!*s || s[0] == ' ' || strchr(s, '<')) continue;
        for (int k = 0; k < 4; k++) { /* always and first agree without added tokens */
            size_t n;
            int32_t *ids = t[k / 2][k % 2] ? encode(t[k / 2][k % 2], s, strlen(s), 0, &n) : NULL;
            same += ids && ids_equal(ids, n, want);
            total++;
            free(ids);
        }
    }
    CHECKF(same == total, "metaspace: %d/%d ids equal the Prepend+Replace fixture", same, total);
    printf("metaspace variants: %d/%d ids equal the fixture\n", same, total);
    if (t[0][0] && t[1][0] && t[2][0]) {
        size_t n1, n2, n3;
        int32_t *a = encode(t[1][0], "<s>Hello", 8, 0, &n1); /* first: not after <s> */
        int32_t *b = encode(t[2][0], "Hello", 5, 0, &n2);
        int32_t *c = encode(t[0][0], "<s>Hello", 8, 0, &n3);
        CHECK(a && b && n1 == n2 + 1 && a[0] == 1 && !memcmp(a + 1, b, n2 * sizeof *b));
        CHECK(c && n3 >= 2 && c[0] == 1 && c[1] != a[1]);
        free(a);
        free(b);
        free(c);
        /* Metaspace decoder: U+2581 -> ' ', dropped in the first token */
        const cJSON *ids1 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(fx, "ids"), 1);
        int32_t v[256];
        size_t n = 0;
        cJSON_ArrayForEach(e, ids1) if (n < 256) v[n++] = (int32_t)e->valuedouble;
        char *d = decode(t[0][0], v, n, 0);
        const char *want = cJSON_GetArrayItem(corpus, 1)->valuestring;
        CHECKF(d && !strcmp(d, want), "metaspace decode: '%s'", d ? d : "(null)");
        bool whole;
        char *sd = stream_decode(t[0][0], v, n, &whole);
        CHECK(sd && d && !strcmp(sd, d));
        free(d);
        free(sd);
    }
    for (int k = 0; k < 6; k++) mnv_tokenizer_free(t[k / 2][k % 2]);
    cJSON_Delete(base);
    cJSON_Delete(fx);
}

#define TINY_VOCAB "\"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"ab\": 3, \"bc\": 4, \"abc\": 5, \"<x>\": 6, \" \": 7}"

static void test_tiny_bpe(void) {
    /* merges: "b c" (rank 0) beats "a b" (rank 1), then "a bc" */
    const char *path = write_file("tokenizer.json",
        "{\"added_tokens\": [{\"id\": 6, \"content\": \"<x>\", \"special\": true}],"
        " \"model\": {\"type\": \"BPE\", " TINY_VOCAB ", \"merges\": [\"b c\", [\"a\", \"b\"], "
        "\"a bc\"]}, \"decoder\": {\"type\": \"Fuse\"}}");
    mnv_tokenizer *t;
    mnv_status st = mnv_tokenizer_load(path, &t);
    CHECKF(st == MNV_OK, "tiny: %s", mnv_last_error());
    if (st != MNV_OK) return;
    size_t n;
    int32_t ids[16];
    CHECK(mnv_tokenize(t, "abc", 3, 0, ids, 16, &n) == MNV_OK && n == 1 && ids[0] == 5);
    CHECK(mnv_tokenize(t, "abab<x>c", 8, 0, ids, 16, &n) == MNV_OK && n == 4 && ids[0] == 3 &&
          ids[1] == 3 && ids[2] == 6 && ids[3] == 2);
    CHECK(mnv_tokenizer_bos(t) == -1 && mnv_tokenizer_add_bos(t) == 0);
    CHECK(mnv_tokenize(t, "a <x> b", 7, 0, ids, 16, &n) == MNV_OK && n == 5 && ids[1] == 7 &&
          ids[2] == 6 && ids[3] == 7);
    mnv_tokenizer_free(t);
    /* lstrip/rstrip swallow the spaces around the token; single_word needs word boundaries */
    path = write_file("tokenizer.json",
        "{\"added_tokens\": [{\"id\": 6, \"content\": \"<x>\", \"special\": true, \"lstrip\": true,"
        " \"rstrip\": true}, {\"id\": 8, \"content\": \"cc\", \"single_word\": true,"
        " \"normalized\": false}], \"model\": {\"type\": \"BPE\", " TINY_VOCAB ", \"merges\": "
        "[\"b c\"]}}");
    st = mnv_tokenizer_load(path, &t);
    CHECKF(st == MNV_OK, "tiny flags: %s", mnv_last_error());
    if (st != MNV_OK) return;
    CHECK(mnv_tokenize(t, "a  <x> b", 8, 0, ids, 16, &n) == MNV_OK && n == 3 && ids[0] == 0 &&
          ids[1] == 6 && ids[2] == 1);
    CHECK(mnv_tokenize(t, "a cc", 4, 0, ids, 16, &n) == MNV_OK && n == 3 && ids[2] == 8);
    CHECK(mnv_tokenize(t, "acc", 3, 0, ids, 16, &n) == MNV_OK && n == 3 && ids[0] == 0 &&
          ids[1] == 2 && ids[2] == 2);
    CHECK(mnv_tokenize(t, "a\xCC\xB0" "cc", 5, 0, ids, 16, &n) == MNV_OK && n == 3 && ids[2] == 2);
    CHECK(mnv_tokenize(t, "-cc", 3, 0, ids, 16, &n) == MNV_OK && n == 1 && ids[0] == 8);
    CHECK(mnv_tokenizer_n_vocab(t) == 9);
    char buf[32];
    size_t len;
    int32_t dec[] = {0, 6, 8, 7};
    /* no decoder: HF joins the tokens with spaces */
    CHECK(mnv_detokenize(t, dec, 4, 0, buf, sizeof buf, &len) == MNV_OK &&
          !strcmp(buf, "a <x> cc  "));
    CHECK(mnv_detokenize(t, dec, 4, 1, buf, sizeof buf, &len) == MNV_OK && !strcmp(buf, "a cc  "));
    mnv_tokenizer_free(t);
}

/* Split behaviors, observed through ignore_merges: every piece is a vocab
 * entry, so each piece comes out as one id (cases from HF's own tests). */
static void test_split_behaviors(void) {
    static const char *vocab = "\"vocab\": {\"The\": 0, \"-\": 1, \"final\": 2, \"countdown\": 3, "
                               "\"The-\": 4, \"final-\": 5, \"-final\": 6, \"-countdown\": 7, "
                               "\"--\": 8}";
    static const struct {
        const char *behavior;
        bool invert;
        int n, ids[8];
    } c[] = {
        {"Removed", false, 3, {0, 2, 3}},
        {"Isolated", false, 6, {0, 1, 2, 1, 1, 3}},
        {"MergedWithPrevious", false, 4, {4, 5, 1, 3}},
        {"MergedWithNext", false, 4, {0, 6, 1, 7}},
        {"Contiguous", false, 5, {0, 1, 2, 8, 3}},
        {"Removed", true, 3, {1, 1, 1}},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        char json[1024];
        snprintf(json, sizeof json, "{\"model\": {\"type\": \"BPE\", \"ignore_merges\": true, %s, "
                 "\"merges\": []}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": "
                 "{\"String\": \"-\"}, \"behavior\": \"%s\", \"invert\": %s}}", vocab,
                 c[i].behavior, c[i].invert ? "true" : "false");
        const char *path = write_file("split.json", json);
        mnv_tokenizer *t;
        mnv_status st = mnv_tokenizer_load(path, &t);
        unlink(path);
        CHECKF(st == MNV_OK, "split %s: %s", c[i].behavior, mnv_last_error());
        if (st != MNV_OK) continue;
        int32_t ids[16];
        size_t n;
        st = mnv_tokenize(t, "The-final--countdown", 20, 0, ids, 16, &n);
        bool ok = st == MNV_OK && n == (size_t)c[i].n;
        for (size_t k = 0; ok && k < n; k++) ok = ids[k] == c[i].ids[k];
        CHECKF(ok, "split behavior %s (invert %d)", c[i].behavior, c[i].invert);
        mnv_tokenizer_free(t);
    }
}

static void test_unicode(void) {
    static const struct {
        const char *in, *nfc, *nfd;
    } v[] = {
        {"e\xCC\x81", "\xC3\xA9", "e\xCC\x81"},                         /* e + acute */
        {"\xC3\xA9", "\xC3\xA9", "e\xCC\x81"},
        {"a\xCC\x80 n\xCC\x83", "\xC3\xA0 \xC3\xB1", "a\xCC\x80 n\xCC\x83"},
        {"q\xCC\x87\xCC\xA3", "q\xCC\xA3\xCC\x87", "q\xCC\xA3\xCC\x87"}, /* reordered by class */
        {"\xE1\x84\x92\xE1\x85\xA1\xE1\x86\xAB", "\xED\x95\x9C",
         "\xE1\x84\x92\xE1\x85\xA1\xE1\x86\xAB"},                          /* Hangul L V T */
        {"\xE2\x84\xAB", "\xC3\x85", "A\xCC\x8A"},                          /* Angstrom sign */
        {"\xCE\xB1\xCC\x81", "\xCE\xAC", "\xCE\xB1\xCC\x81"},               /* Greek alpha tonos */
        {"\xD0\xB5\xCC\x88", "\xD1\x91", "\xD0\xB5\xCC\x88"},               /* Cyrillic io */
        {"plain ascii", "plain ascii", "plain ascii"},
    };
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        mnv__buf a = {0}, b = {0};
        mnv__normalize_nf(v[i].in, strlen(v[i].in), true, &a);
        mnv__normalize_nf(v[i].in, strlen(v[i].in), false, &b);
        CHECKF(a.len == strlen(v[i].nfc) && !memcmp(a.p, v[i].nfc, a.len), "NFC case %zu", i);
        CHECKF(b.len == strlen(v[i].nfd) && !memcmp(b.p, v[i].nfd, b.len), "NFD case %zu", i);
        mnv__buf_free(&a);
        mnv__buf_free(&b);
    }
    mnv__buf l = {0};
    mnv__utf8_lossy("a\xE2\x82z\xF0\x9F\x98\x80\xFF", 9, &l); /* truncated, emoji, bad byte */
    CHECK(l.len == 12 && !memcmp(l.p, "a\xEF\xBF\xBDz\xF0\x9F\x98\x80\xEF\xBF\xBD", 12));
    mnv__buf_free(&l);
}

static void test_errors(void) {
    mnv_tokenizer *t = (mnv_tokenizer *)1;
    CHECK(mnv_tokenizer_load("no/such/tokenizer.json", &t) == MNV_ERR_IO && t == NULL);
    CHECK(strstr(mnv_last_error(), "no/such/tokenizer.json") != NULL);
    expect_error("notjson", "this is not JSON", MNV_ERR_FORMAT, "JSON");
    expect_error("truncated", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b", MNV_ERR_FORMAT,
                 "JSON");
    expect_error("nomodel", "{\"version\": \"1.0\"}", MNV_ERR_FORMAT, "'model'");
    expect_error("novocab", "{\"model\": {\"type\": \"BPE\", \"merges\": []}}", MNV_ERR_FORMAT,
                 "vocab");
    expect_error("unigram", "{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]]}}",
                 MNV_ERR_UNSUPPORTED, "model.type 'Unigram'");
    expect_error("wordpiece", "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}",
                 MNV_ERR_UNSUPPORTED, "model.type 'WordPiece'");
    expect_error("badmerge", "{\"model\": {\"type\": \"BPE\", " TINY_VOCAB ", \"merges\": "
                 "[\"a b\", \"a q\"]}}", MNV_ERR_FORMAT, "model.merges[1]: token 'q'");
    expect_error("badmerged", "{\"model\": {\"type\": \"BPE\", " TINY_VOCAB ", \"merges\": "
                 "[[\"c\", \"a\"]]}}", MNV_ERR_FORMAT, "merged token 'ca'");
    expect_error("badid", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}, \"merges\": []}}",
                 MNV_ERR_FORMAT, "'a'");
    expect_error("badregex", "{\"model\": {\"type\": \"BPE\", " TINY_VOCAB ", \"merges\": []}, "
                 "\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(unclosed[\"},"
                 " \"behavior\": \"Isolated\", \"invert\": false}}", MNV_ERR_FORMAT, "(unclosed[");
    CHECKF(strstr(mnv_last_error(), "missing") != NULL, "PCRE2 message: %s", mnv_last_error());
    expect_error("nfkc", "{\"model\": {\"type\": \"BPE\", " TINY_VOCAB ", \"merges\": []}, "
                 "\"normalizer\": {\"type\": \"NFKC\"}}", MNV_ERR_UNSUPPORTED, "'NFKC'");
    expect_error("badadded", "{\"model\": {\"type\": \"BPE\", " TINY_VOCAB ", \"merges\": []}, "
                 "\"added_tokens\": [{\"content\": \"<y>\"}]}", MNV_ERR_FORMAT, "added_tokens[0]");
    /* a valid tokenizer.json beside a broken tokenizer_config.json */
    write_file("tokenizer_config.json", "{\"bos_token\": ");
    expect_error("tokenizer", "{\"model\": {\"type\": \"BPE\", " TINY_VOCAB ", \"merges\": []}}",
                 MNV_ERR_FORMAT, "tokenizer_config.json");
    char p[128];
    snprintf(p, sizeof p, "%s/tokenizer_config.json", tmpdir);
    unlink(p);
}

/* ---- files that once crashed or misled (tests/fixtures/repro) ---------------------------- */

#define REPRO "fixtures/repro/"

static void expect_load_error(const char *file, mnv_status want, const char *needle1,
                              const char *needle2) {
    char path[160];
    snprintf(path, sizeof path, REPRO "%s", file);
    mnv_tokenizer *t = (mnv_tokenizer *)1;
    mnv_status st = mnv_tokenizer_load(path, &t);
    CHECKF(st == want && t == NULL, "%s: status %s (want %s): %s", file, mnv_status_str(st),
           mnv_status_str(want), mnv_last_error());
    CHECKF(strstr(mnv_last_error(), needle1) && strstr(mnv_last_error(), needle2),
           "%s: message '%s' lacks '%s' or '%s'", file, mnv_last_error(), needle1, needle2);
    if (st == MNV_OK) mnv_tokenizer_free(t); /* never encoded: that is what crashed */
}

static void test_repro(void) {
    /* strings of raw invalid UTF-8 are rejected at load, naming the key and the byte */
    expect_load_error("segv-prepend-invalid-utf8.tokenizer.json", MNV_ERR_FORMAT,
                      "normalizer.prepend", "byte 47");
    expect_load_error("segv-replace-content-invalid-utf8.tokenizer.json", MNV_ERR_FORMAT,
                      "normalizer.content", "not valid UTF-8");
    expect_load_error("segv-decode-regex-invalid-utf8-vocab.tokenizer.json", MNV_ERR_FORMAT,
                      "model.vocab", "not valid UTF-8");
    /* a BOS id that is no token */
    expect_load_error("bos-hole-minimal.tokenizer.json", MNV_ERR_FORMAT, "post_processor",
                      "id 2");
    /* an empty id list through a Fuse decoder (UBSan: NULL + 0) */
    mnv_tokenizer *t = NULL;
    mnv_status st = mnv_tokenizer_load(REPRO "ubsan-nullptr-offset-tok_decode158.tokenizer.json", &t);
    CHECKF(st == MNV_OK, "fuse: %s", mnv_last_error());
    if (st == MNV_OK) {
        char buf[8] = "x";
        size_t len = 1;
        CHECK(mnv_detokenize(t, NULL, 0, 0, buf, sizeof buf, &len) == MNV_OK && len == 0 && !buf[0]);
        int32_t none = 0;
        CHECK(mnv_detokenize(t, &none, 0, 1, buf, sizeof buf, &len) == MNV_OK && len == 0);
        mnv_tokenizer_free(t);
    }
    /* an empty token streamed into a Strip step (found by fuzz_tokenizer_load: NULL + 0) */
    const char *path = write_file("empty.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": "
        "{\"\": 0, \" a\": 1}, \"merges\": []}, \"decoder\": {\"type\": \"Sequence\", "
        "\"decoders\": [{\"type\": \"Fuse\"}, {\"type\": \"Strip\", \"content\": \" \", "
        "\"start\": 1, \"stop\": 0}]}}");
    st = mnv_tokenizer_load(path, &t);
    CHECKF(st == MNV_OK, "empty token: %s", mnv_last_error());
    if (st == MNV_OK) {
        int32_t ids[] = {0, 1, 0};
        bool whole;
        char *sd = stream_decode(t, ids, 3, &whole), *d = decode(t, ids, 3, 0);
        CHECKF(sd && d && !strcmp(sd, "a") && !strcmp(d, "a"), "empty token: '%s' '%s'",
               sd ? sd : "(null)", d ? d : "(null)");
        free(sd);
        free(d);
        mnv_tokenizer_free(t);
    }
    unlink(path);
}

/* Invalid UTF-8 written as JSON text elsewhere than the repro files: keys, nested
 * steps, merges, added tokens, escapes that JSON forbids. */
static void test_invalid_utf8(void) {
    expect_error("u8key", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\xC3\": 1}, "
                 "\"merges\": []}}", MNV_ERR_FORMAT, "model.vocab");
    expect_error("u8seq", "{\"model\": {\"type\": \"BPE\", " TINY_VOCAB ", \"merges\": []}, "
                 "\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFC\"}, "
                 "{\"type\": \"Replace\", \"pattern\": {\"Regex\": \"\xE2\x82\"}, \"content\": \"\"}]}}",
                 MNV_ERR_FORMAT, "normalizer.normalizers[1].pattern.Regex");
    expect_error("u8added", "{\"model\": {\"type\": \"BPE\", " TINY_VOCAB ", \"merges\": []}, "
                 "\"added_tokens\": [{\"id\": 9, \"content\": \"<\xF5>\"}]}", MNV_ERR_FORMAT,
                 "added_tokens[0].content");
    expect_error("u8merge", "{\"model\": {\"type\": \"BPE\", " TINY_VOCAB ", \"merges\": "
                 "[\"a b\", \"b \xC0\xAF\"]}}", MNV_ERR_FORMAT, "model.merges[1]");
    expect_error("u8surr", "{\"model\": {\"type\": \"BPE\", " TINY_VOCAB ", \"merges\": []}, "
                 "\"normalizer\": {\"type\": \"Prepend\", \"prepend\": \"\xED\xA0\x80\"}}",
                 MNV_ERR_FORMAT, "normalizer.prepend");
    expect_error("u8outside", "{\"model\": {\"type\": \"BPE\", " TINY_VOCAB ", \"merges\": []}}\xFF",
                 MNV_ERR_FORMAT, "the text outside any string is not valid UTF-8");
    expect_error("u8nested", "{\"model\": {\"type\": \"BPE\", " TINY_VOCAB ", \"merges\": "
                 "[[\"a\", \"b\"], [\"b\", \"\xC3\"]]}}", MNV_ERR_FORMAT, "model.merges[1][1]");
    /* input text of invalid UTF-8 through a Replace regex normalizer: read as U+FFFD */
    const char *path = write_file("u8ok.json",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"_\": 2, "
        "\"\xEF\xBF\xBD\": 3}, \"merges\": []}, \"normalizer\": {\"type\": \"Replace\", "
        "\"pattern\": {\"Regex\": \"\\\\s+\"}, \"content\": \"_\"}}");
    mnv_tokenizer *t = NULL;
    mnv_status st = mnv_tokenizer_load(path, &t);
    CHECKF(st == MNV_OK, "u8ok: %s", mnv_last_error());
    if (st == MNV_OK) {
        int32_t ids[16];
        size_t n;
        CHECK(mnv_tokenize(t, "a \xFF b\xE2\x82", 7, 0, ids, 16, &n) == MNV_OK && n == 6 &&
              ids[0] == 0 && ids[1] == 2 && ids[2] == 3 && ids[3] == 2 && ids[4] == 1 &&
              ids[5] == 3);
        mnv_tokenizer_free(t);
    }
    unlink(path);
    /* a decoder regex after ByteFallback sees raw bytes while streaming: no crash, the
     * regex is applied to the valid runs only */
    path = write_file("u8stream.json",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"<0xFF>\": 0, \"<0xC3>\": 1, \"<0xA9>\": 2, "
        "\"a  b\": 3}, \"merges\": []}, \"decoder\": {\"type\": \"Sequence\", \"decoders\": ["
        "{\"type\": \"ByteFallback\"}, {\"type\": \"Replace\", \"pattern\": {\"Regex\": "
        "\"\\\\s+\"}, \"content\": \" \"}]}}");
    st = mnv_tokenizer_load(path, &t);
    CHECKF(st == MNV_OK, "u8stream: %s", mnv_last_error());
    if (st == MNV_OK) {
        int32_t ids[] = {0, 3, 1, 2, 0};
        bool whole;
        char *sd = stream_decode(t, ids, 5, &whole);
        CHECKF(sd && !strcmp(sd, "\xEF\xBF\xBD" "a b\xC3\xA9\xEF\xBF\xBD"), "stream: '%s'",
               sd ? sd : "(null)");
        free(sd);
        mnv_tokenizer_free(t);
    }
    unlink(path);
}

/* The limits and messages of crafted files. */
static void test_limits(void) {
    char json[2048];
    int k = snprintf(json, sizeof json, "{\"model\": {\"type\": \"BPE\", " TINY_VOCAB
                     ", \"merges\": []}, \"normalizer\": ");
    for (int d = 0; d < 10; d++)
        k += snprintf(json + k, sizeof json - (size_t)k, "{\"type\": \"Sequence\", \"normalizers\": [");
    k += snprintf(json + k, sizeof json - (size_t)k, "{\"type\": \"NFC\"}");
    for (int d = 0; d < 10; d++) k += snprintf(json + k, sizeof json - (size_t)k, "]}");
    snprintf(json + k, sizeof json - (size_t)k, "}");
    expect_error("deep", json, MNV_ERR_UNSUPPORTED, "nested more than 8 deep");
    /* a post-processor BOS id beyond the vocabulary */
    expect_error("bosrange", "{\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": "
                 "[{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}], \"special_tokens\": "
                 "{\"<s>\": {\"id\": \"<s>\", \"ids\": [99]}}}, \"model\": {\"type\": \"BPE\", "
                 TINY_VOCAB ", \"merges\": []}}", MNV_ERR_FORMAT, "id 99");
}

/* Randomly damaged copies of a real tokenizer.json: a clean error or a
 * working tokenizer, never a crash (run under ASan to make this bite). */
static void test_mutations(void) {
    char *doc;
    size_t len;
    if (mnv_read_file("../models/stories260K/tokenizer.json", &doc, &len) != MNV_OK) return;
    static const char junk[] = "{}[]\":,\\0123456789-.eE atu<>";
    int ok = 0, err = 0, bad = 0;
    char *m = malloc(len + 1);
    char path[160];
    snprintf(path, sizeof path, "%s/mut.json", tmpdir);
    const char *env = getenv("MNV_TOK_FUZZ"); /* more iterations on request */
    int iters = env ? atoi(env) : 300;
    for (int r = 0; r < iters; r++) {
        memcpy(m, doc, len);
        size_t n = len;
        for (int k = t_randint(1, 4); k > 0; k--) {
            size_t at = (size_t)t_randint(0, (int)n - 1);
            int op = t_randint(0, 9);
            if (op == 0) n = at;                                     /* truncate */
            else if (op < 7) m[at] = junk[t_randint(0, (int)sizeof junk - 2)];
            else memmove(m + at, m + at + 1, n - at - 1), n--;       /* delete */
            if (n < 2) break;
        }
        FILE *f = fopen(path, "wb");
        if (!f) break;
        fwrite(m, 1, n, f);
        fclose(f);
        mnv_tokenizer *t = NULL;
        mnv_status st = mnv_tokenizer_load(path, &t);
        if (st == MNV_OK) {
            size_t nid;
            int32_t *ids = encode(t, "Hello world <s> x", 17, 1, &nid);
            char *d = ids ? decode(t, ids, nid, 0) : NULL;
            ok++;
            free(ids);
            free(d);
            mnv_tokenizer_free(t);
        } else {
            err++;
            bad += t != NULL || !mnv_last_error()[0];
        }
    }
    unlink(path);
    free(m);
    free(doc);
    CHECKF(bad == 0, "mutations: %d errors without a message", bad);
    printf("mutated tokenizer.json: %d loaded, %d rejected with a message\n", ok, err);
}

static void remove_tmpdir(void) {
    static const char *names[] = {"notjson", "truncated", "nomodel", "novocab", "unigram",
                                  "wordpiece", "badmerge", "badmerged", "badid", "badregex",
                                  "nfkc", "badadded", "tokenizer", "u8key", "u8seq", "u8added",
                                  "u8merge", "u8surr", "u8outside", "u8nested", "deep",
                                  "bosrange"};
    char p[160];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(p, sizeof p, "%s/%s.json", tmpdir, names[i]);
        unlink(p);
    }
    rmdir(tmpdir);
}

/* UTF-8: the encoder against a bit-by-bit reference and the strict decoder,
 * at every length boundary and fresh random code points of each length. */
static size_t ref_utf8(uint32_t cp, unsigned char *o) {
    static const uint32_t top[3] = {0x80, 0x800, 0x10000};
    size_t n = 1;
    while (n < 4 && cp >= top[n - 1]) n++;
    if (n == 1) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    for (size_t i = n - 1; i > 0; i--, cp >>= 6) o[i] = (unsigned char)(0x80 + cp % 64);
    o[0] = (unsigned char)((0xF00u >> n) | cp); /* n leading ones, then the high bits */
    return n;
}

static void test_utf8_encode(void) {
    uint32_t cps[64] = {0, 0x41, 0x7F, 0x80, 0x7FF, 0x800, 0xFFFF, 0x10000, 0x10FFFF, 0xD7FF, 0xE000};
    size_t n = 11;
    while (n < 64) {
        uint32_t bits[4] = {7, 11, 16, 21};
        uint32_t cp = (uint32_t)(t_rand64() >> 20) & ((1u << bits[n % 4]) - 1);
        if (cp <= 0x10FFFF && !(cp >= 0xD800 && cp < 0xE000)) cps[n++] = cp;
    }
    for (size_t i = 0; i < n; i++) {
        char out[4];
        unsigned char ref[4];
        size_t len = mnv__utf8_encode(cps[i], out), rlen = ref_utf8(cps[i], ref);
        uint32_t back = 0xFFFFFFFF;
        CHECKF(len == rlen && !memcmp(out, ref, len), "U+%04X: %zu bytes, reference %zu", (unsigned)cps[i],
               len, rlen);
        CHECKF(mnv__utf8_next(out, len, &back) == len && back == cps[i], "U+%04X decodes to U+%04X",
               (unsigned)cps[i], (unsigned)back);
    }
    /* a surrogate is written as its three bytes, which the strict decoder refuses */
    char out[4];
    uint32_t cp;
    CHECK(mnv__utf8_encode(0xD800, out) == 3 && !memcmp(out, "\xED\xA0\x80", 3));
    CHECK(mnv__utf8_next(out, 3, &cp) == 0);
}

int main(void) {
    t_seed();
    cJSON *corpus = read_json(CORPUS);
    CHECKF(cJSON_IsArray(corpus), "%s missing or not a JSON list", CORPUS);
    if (!corpus) return t_done();
    test_tokenizer("stories260k", "../models/stories260K/tokenizer.json", corpus, false);
    static const char *shared[] = {"gptoss", "qwen3", "llama3"};
    for (int i = 0; i < 3; i++) {
        char path[192], dir[128];
        snprintf(dir, sizeof dir, "../../shared/tokenizers/%s", shared[i]);
        snprintf(path, sizeof path, "%s/tokenizer.json", dir);
        if (!exists(dir)) {
            printf("SKIP: %s not present\n", dir);
            continue;
        }
        test_tokenizer(shared[i], path, corpus, true);
    }
    test_gptoss_harmony();
    test_stories_api();
    strcpy(tmpdir, "/tmp/mnv_tok_XXXXXX");
    CHECK(mkdtemp(tmpdir) != NULL);
    test_tiny_bpe();
    test_unicode();
    test_utf8_encode();
    test_split_behaviors();
    test_metaspace(corpus);
    test_errors();
    test_repro();
    test_invalid_utf8();
    test_limits();
    test_mutations();
    remove_tmpdir();
    cJSON_Delete(corpus);
    return t_done();
}
