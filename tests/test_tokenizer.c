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
    /* too small a buffer: RANGE with the needed count */
    size_t need = n;
    CHECK(mnv_tokenize(t, "Hello", 5, 1, ids, 1, &n) == MNV_ERR_RANGE && n == need);
    CHECK(mnv_tokenize(t, "", 0, 0, NULL, 0, &n) == MNV_OK && n == 0);
    /* decode: bad ids name the id */
    char buf[64];
    size_t len;
    int32_t bad[] = {5, 512};
    CHECK(mnv_detokenize(t, bad, 2, 0, buf, sizeof buf, &len) == MNV_ERR_RANGE);
    CHECKF(strstr(mnv_last_error(), "512") != NULL, "error names the id: %s", mnv_last_error());
    int32_t neg = -3;
    CHECK(mnv_detokenize(t, &neg, 1, 0, buf, sizeof buf, &len) == MNV_ERR_RANGE);
    /* leading space of the first token only; byte-fallback bytes fused */
    int32_t hi[] = {1, 260};
    CHECK(mnv_detokenize(t, hi, 2, 1, buf, sizeof buf, &len) == MNV_OK && !strcmp(buf, "he"));
    CHECK(mnv_detokenize(t, hi, 2, 1, buf, 2, &len) == MNV_ERR_RANGE && len == 2);
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
    CHECK(mnv_detok_stream_push(s, 175, buf, 2, &len) == MNV_ERR_RANGE && len == 3);
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

#define TINY_VOCAB "\"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"ab\": 3, \"bc\": 4, \"abc\": 5, \"<x>\": 6}"

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
    mnv_tokenizer_free(t);
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

static void remove_tmpdir(void) {
    static const char *names[] = {"notjson", "truncated", "nomodel", "novocab", "unigram",
                                  "wordpiece", "badmerge", "badmerged", "badid", "badregex",
                                  "nfkc", "badadded", "tokenizer"};
    char p[160];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(p, sizeof p, "%s/%s.json", tmpdir, names[i]);
        unlink(p);
    }
    rmdir(tmpdir);
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
    cJSON_Delete(corpus);
    test_gptoss_harmony();
    test_stories_api();
    strcpy(tmpdir, "/tmp/mnv_tok_XXXXXX");
    CHECK(mkdtemp(tmpdir) != NULL);
    test_tiny_bpe();
    test_errors();
    remove_tmpdir();
    return t_done();
}
