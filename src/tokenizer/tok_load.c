/* mnv_tokenizer_load: reads a Hugging Face tokenizer.json (BPE model,
 * added tokens, normalizer, pre-tokenizer, decoder) and the
 * tokenizer_config.json beside it. Unsupported components are reported by
 * name (MNV_ERR_UNSUPPORTED), malformed ones as MNV_ERR_FORMAT. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>

#include "tokenizer/tokenizer.h"

static const cJSON *get(const cJSON *o, const char *key) {
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
}

static const char *get_str(const cJSON *o, const char *key) {
    const cJSON *v = get(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool get_bool(const cJSON *o, const char *key, bool def) {
    const cJSON *v = get(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : def;
}

static char *dup_n(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

mnv_status mnv__regex_compile(const char *path, const char *what, const char *pat, size_t len,
                              pcre2_code **out) {
    int err;
    PCRE2_SIZE off;
    *out = NULL;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, len, PCRE2_UTF | PCRE2_UCP, &err, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return mnv_set_error(MNV_ERR_FORMAT, "%s: %s: regex '%.*s' does not compile: %s (at "
                             "pattern offset %zu)", path, what, (int)MNV_MIN(len, 300), pat,
                             (const char *)msg, (size_t)off);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* on failure the interpreter is used */
    *out = re;
    return MNV_OK;
}

/* {"String": s} or {"Regex": r} -> literal copy or compiled regex. */
static mnv_status load_pattern(const char *path, const char *what, const cJSON *pat, char **lit,
                               size_t *lit_len, pcre2_code **re) {
    const char *s = get_str(pat, "String"), *r = get_str(pat, "Regex");
    *lit = NULL;
    *lit_len = 0;
    *re = NULL;
    if (r) return mnv__regex_compile(path, what, r, strlen(r), re);
    if (!s) return mnv_set_error(MNV_ERR_FORMAT, "%s: %s: pattern is neither {\"String\": ...} "
                                 "nor {\"Regex\": ...}", path, what);
    *lit_len = strlen(s);
    *lit = dup_n(s, *lit_len);
    return *lit ? MNV_OK : mnv_set_error(MNV_ERR_NOMEM, "%s: %s", path, what);
}

static mnv_status load_replace(const char *path, const char *what, const cJSON *j,
                               mnv__replace *rep) {
    const char *content = get_str(j, "content");
    if (!content) return mnv_set_error(MNV_ERR_FORMAT, "%s: %s: Replace has no string 'content'",
                                       path, what);
    mnv_status st = load_pattern(path, what, get(j, "pattern"), &rep->pat, &rep->pat_len, &rep->re);
    if (st != MNV_OK) return st;
    rep->content_len = strlen(content);
    rep->content = dup_n(content, rep->content_len);
    return rep->content ? MNV_OK : mnv_set_error(MNV_ERR_NOMEM, "%s: %s", path, what);
}

/* Grow one of the step arrays by one zeroed element. */
static void *push_step(void **arr, int *n, size_t size) {
    void *p = realloc(*arr, (size_t)(*n + 1) * size);
    if (!p) return NULL;
    *arr = p;
    memset((char *)p + (size_t)*n * size, 0, size);
    return (char *)p + (size_t)(*n)++ * size;
}

static mnv_status unsupported(const char *path, const char *what, const char *type) {
    return mnv_set_error(MNV_ERR_UNSUPPORTED, "%s: %s type '%s' is not supported", path, what,
                         type ? type : "(missing)");
}

/* Sequences nest at most this deep (bounds the recursion a crafted file asks for). */
#define MAX_NESTING 8

/* A pipeline step: unsupported when untyped or nested too deep. */
static mnv_status check_step(const char *path, const char *what, const char *type, int depth) {
    if (depth > MAX_NESTING)
        return mnv_set_error(MNV_ERR_UNSUPPORTED, "%s: %s Sequence nested more than %d deep is not "
                             "supported", path, what, MAX_NESTING);
    return type ? MNV_OK : unsupported(path, what, type);
}

/* ---- normalizer ---------------------------------------------------------------- */

static mnv_status load_normalizer(mnv_tokenizer *t, const char *path, const cJSON *j, int depth) {
    if (!j || cJSON_IsNull(j)) return MNV_OK;
    const char *type = get_str(j, "type");
    mnv_status cs = check_step(path, "normalizer", type, depth);
    if (cs != MNV_OK) return cs;
    if (!strcmp(type, "Sequence")) {
        const cJSON *e, *list = get(j, "normalizers");
        if (!cJSON_IsArray(list))
            return mnv_set_error(MNV_ERR_FORMAT, "%s: normalizer Sequence has no 'normalizers' "
                                 "array", path);
        cJSON_ArrayForEach(e, list) {
            mnv_status st = load_normalizer(t, path, e, depth + 1);
            if (st != MNV_OK) return st;
        }
        return MNV_OK;
    }
    mnv__norm *n = push_step((void **)&t->norm, &t->n_norm, sizeof *n);
    if (!n) return mnv_set_error(MNV_ERR_NOMEM, "%s: normalizer", path);
    if (!strcmp(type, "NFC") || !strcmp(type, "NFD")) {
        n->kind = type[2] == 'C' ? MNV__NORM_NFC : MNV__NORM_NFD;
        return MNV_OK;
    }
    if (!strcmp(type, "Prepend")) {
        const char *p = get_str(j, "prepend");
        if (!p) return mnv_set_error(MNV_ERR_FORMAT, "%s: normalizer Prepend: no 'prepend' "
                                     "string", path);
        n->kind = MNV__NORM_PREPEND;
        n->rep.content_len = strlen(p);
        n->rep.content = dup_n(p, n->rep.content_len);
        return n->rep.content ? MNV_OK : mnv_set_error(MNV_ERR_NOMEM, "%s: normalizer", path);
    }
    if (!strcmp(type, "Replace")) {
        n->kind = MNV__NORM_REPLACE;
        return load_replace(path, "normalizer Replace", j, &n->rep);
    }
    if (!strcmp(type, "Strip")) {
        n->kind = MNV__NORM_STRIP;
        n->left = get_bool(j, "strip_left", true);
        n->right = get_bool(j, "strip_right", true);
        return MNV_OK;
    }
    t->n_norm--;
    return unsupported(path, "normalizer", type);
}

/* ---- pre-tokenizer ----------------------------------------------------------- */

static mnv_status split_behavior(const char *path, const char *b, mnv__split_behavior *out) {
    static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
                                  "Contiguous"};
    for (int i = 0; i < 5; i++) {
        if (b && !strcmp(b, names[i])) {
            *out = (mnv__split_behavior)i;
            return MNV_OK;
        }
    }
    return mnv_set_error(MNV_ERR_UNSUPPORTED, "%s: pre_tokenizer Split behavior '%s' is not "
                         "supported", path, b ? b : "(missing)");
}

static mnv_status scheme_of(const char *path, const cJSON *j, mnv__prepend_scheme *out) {
    const char *s = get_str(j, "prepend_scheme");
    if (!s) {
        *out = get_bool(j, "add_prefix_space", true) ? MNV__PREPEND_ALWAYS : MNV__PREPEND_NEVER;
        return MNV_OK;
    }
    if (!strcmp(s, "always")) *out = MNV__PREPEND_ALWAYS;
    else if (!strcmp(s, "first")) *out = MNV__PREPEND_FIRST;
    else if (!strcmp(s, "never")) *out = MNV__PREPEND_NEVER;
    else return mnv_set_error(MNV_ERR_FORMAT, "%s: Metaspace prepend_scheme '%s' is not one of "
                              "always/first/never", path, s);
    return MNV_OK;
}

static mnv_status metaspace_repl(const char *path, const cJSON *j, char *repl, size_t *len) {
    const char *r = get_str(j, "replacement");
    if (!r) r = "\xe2\x96\x81"; /* U+2581 */
    uint32_t cp;
    size_t n = strlen(r);
    if (n == 0 || n > 4 || mnv__utf8_next(r, n, &cp) != n)
        return mnv_set_error(MNV_ERR_FORMAT, "%s: Metaspace replacement '%s' is not one character",
                             path, r);
    memcpy(repl, r, n);
    *len = n;
    return MNV_OK;
}

/* Digits / Whitespace / WhitespaceSplit are regex splits. */
static mnv_status regex_split(mnv__pretok *p, const char *path, const char *type, const char *re,
                              mnv__split_behavior b, bool invert) {
    p->kind = MNV__PRE_SPLIT;
    p->behavior = b;
    p->invert = invert;
    return mnv__regex_compile(path, type, re, strlen(re), &p->re);
}

static mnv_status load_pretok(mnv_tokenizer *t, const char *path, const cJSON *j, int depth) {
    if (!j || cJSON_IsNull(j)) return MNV_OK;
    const char *type = get_str(j, "type");
    mnv_status cs = check_step(path, "pre_tokenizer", type, depth);
    if (cs != MNV_OK) return cs;
    if (!strcmp(type, "Sequence")) {
        const cJSON *e, *list = get(j, "pretokenizers");
        if (!cJSON_IsArray(list))
            return mnv_set_error(MNV_ERR_FORMAT, "%s: pre_tokenizer Sequence has no "
                                 "'pretokenizers' array", path);
        cJSON_ArrayForEach(e, list) {
            mnv_status st = load_pretok(t, path, e, depth + 1);
            if (st != MNV_OK) return st;
        }
        return MNV_OK;
    }
    mnv__pretok *p = push_step((void **)&t->pre, &t->n_pre, sizeof *p);
    if (!p) return mnv_set_error(MNV_ERR_NOMEM, "%s: pre_tokenizer", path);
    if (!strcmp(type, "Split")) {
        p->kind = MNV__PRE_SPLIT;
        p->invert = get_bool(j, "invert", false);
        mnv_status st = split_behavior(path, get_str(j, "behavior"), &p->behavior);
        if (st != MNV_OK) return st;
        return load_pattern(path, "pre_tokenizer Split", get(j, "pattern"), &p->lit, &p->lit_len,
                            &p->re);
    }
    if (!strcmp(type, "ByteLevel")) {
        p->kind = MNV__PRE_BYTELEVEL;
        p->add_prefix_space = get_bool(j, "add_prefix_space", true);
        p->use_regex = get_bool(j, "use_regex", true);
        if (p->use_regex && !t->gpt2_re) {
            static const char gpt2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}"
                                       "\\p{N}]+|\\s+(?!\\S)|\\s+";
            return mnv__regex_compile(path, "ByteLevel", gpt2, sizeof gpt2 - 1, &t->gpt2_re);
        }
        return MNV_OK;
    }
    if (!strcmp(type, "Metaspace")) {
        p->kind = MNV__PRE_METASPACE;
        p->split = get_bool(j, "split", true);
        mnv_status st = scheme_of(path, j, &p->scheme);
        return st != MNV_OK ? st : metaspace_repl(path, j, p->repl, &p->repl_len);
    }
    if (!strcmp(type, "Digits"))
        return regex_split(p, path, "Digits", get_bool(j, "individual_digits", false) ? "\\p{N}"
                           : "\\p{N}+", MNV__SPLIT_ISOLATED, false);
    if (!strcmp(type, "Whitespace"))
        return regex_split(p, path, "Whitespace", "\\w+|[^\\w\\s]+", MNV__SPLIT_REMOVED, true);
    if (!strcmp(type, "WhitespaceSplit"))
        return regex_split(p, path, "WhitespaceSplit", "\\s+", MNV__SPLIT_REMOVED, false);
    t->n_pre--;
    return unsupported(path, "pre_tokenizer", type);
}

/* ---- decoder -------------------------------------------------------------------- */

static mnv_status load_decoder(mnv_tokenizer *t, const char *path, const cJSON *j, int depth) {
    if (!j || cJSON_IsNull(j)) return MNV_OK;
    const char *type = get_str(j, "type");
    mnv_status cs = check_step(path, "decoder", type, depth);
    if (cs != MNV_OK) return cs;
    t->has_decoder = true;
    if (!strcmp(type, "Sequence")) {
        const cJSON *e, *list = get(j, "decoders");
        if (!cJSON_IsArray(list))
            return mnv_set_error(MNV_ERR_FORMAT, "%s: decoder Sequence has no 'decoders' array",
                                 path);
        cJSON_ArrayForEach(e, list) {
            mnv_status st = load_decoder(t, path, e, depth + 1);
            if (st != MNV_OK) return st;
        }
        return MNV_OK;
    }
    mnv__dec *d = push_step((void **)&t->dec, &t->n_dec, sizeof *d);
    if (!d) return mnv_set_error(MNV_ERR_NOMEM, "%s: decoder", path);
    if (!strcmp(type, "ByteLevel")) {
        d->kind = MNV__DEC_BYTELEVEL;
    } else if (!strcmp(type, "ByteFallback")) {
        d->kind = MNV__DEC_BYTEFALLBACK;
    } else if (!strcmp(type, "Fuse")) {
        d->kind = MNV__DEC_FUSE;
    } else if (!strcmp(type, "Replace")) {
        d->kind = MNV__DEC_REPLACE;
        return load_replace(path, "decoder Replace", j, &d->rep);
    } else if (!strcmp(type, "Strip")) {
        const char *c = get_str(j, "content");
        const cJSON *a = get(j, "start"), *b = get(j, "stop");
        uint32_t cp;
        if (!c || !*c || strlen(c) > 4 || mnv__utf8_next(c, strlen(c), &cp) != strlen(c) ||
            !cJSON_IsNumber(a) || !cJSON_IsNumber(b) || !(a->valuedouble >= 0 && a->valuedouble <= 1e6) ||
            !(b->valuedouble >= 0 && b->valuedouble <= 1e6))
            return mnv_set_error(MNV_ERR_FORMAT, "%s: decoder Strip needs a one-character "
                                 "'content' and 'start'/'stop' counts from 0 to 1000000", path);
        d->kind = MNV__DEC_STRIP;
        d->content_len = strlen(c);
        memcpy(d->content, c, d->content_len);
        d->start = (size_t)a->valuedouble;
        d->stop = (size_t)b->valuedouble;
    } else if (!strcmp(type, "Metaspace")) {
        d->kind = MNV__DEC_METASPACE;
        mnv_status st = scheme_of(path, j, &d->scheme);
        return st != MNV_OK ? st : metaspace_repl(path, j, d->repl, &d->repl_len);
    } else {
        t->n_dec--;
        return unsupported(path, "decoder", type);
    }
    return MNV_OK;
}

/* ---- model ------------------------------------------------------------------------ */

static mnv_status load_model(mnv_tokenizer *t, const char *path, const cJSON *m,
                             const mnv__json_ranges *r) {
    if (!cJSON_IsObject(m)) return mnv_set_error(MNV_ERR_FORMAT, "%s: no 'model' object", path);
    const char *type = get_str(m, "type");
    if (type && strcmp(type, "BPE") != 0)
        return mnv_set_error(MNV_ERR_UNSUPPORTED, "%s: model.type '%s' is not supported (only "
                             "BPE)", path, type);
    if (!r->vocab_end) return mnv_set_error(MNV_ERR_FORMAT, "%s: model has no 'vocab'", path);
    if (!type && !r->merges_end)
        return mnv_set_error(MNV_ERR_UNSUPPORTED, "%s: model has no 'type' and no 'merges' "
                             "(only BPE is supported)", path);
    static const char *affix[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const char *s = get_str(m, affix[i]);
        if (s && *s)
            return mnv_set_error(MNV_ERR_UNSUPPORTED, "%s: model.%s '%s' is not supported", path,
                                 affix[i], s);
    }
    t->byte_fallback = get_bool(m, "byte_fallback", false);
    t->fuse_unk = get_bool(m, "fuse_unk", false);
    t->ignore_merges = get_bool(m, "ignore_merges", false);
    return MNV_OK;
}

/* ---- added tokens ------------------------------------------------------------------ */

static mnv_status load_added(mnv_tokenizer *t, const char *path, const cJSON *list) {
    if (!list || cJSON_IsNull(list)) return MNV_OK;
    if (!cJSON_IsArray(list)) return mnv_set_error(MNV_ERR_FORMAT, "%s: added_tokens is not an "
                                                   "array", path);
    int n = cJSON_GetArraySize(list), i = 0;
    t->added = calloc((size_t)n + 1, sizeof *t->added);
    if (!t->added) return mnv_set_error(MNV_ERR_NOMEM, "%s: added_tokens", path);
    const cJSON *e;
    cJSON_ArrayForEach(e, list) {
        const cJSON *id = get(e, "id");
        const char *content = get_str(e, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= MNV__TOK_MAX_ID ||
            !content)
            return mnv_set_error(MNV_ERR_FORMAT, "%s: added_tokens[%d]: needs an integer 'id' in "
                                 "[0, %d) and a string 'content'", path, i, MNV__TOK_MAX_ID);
        mnv__added *a = &t->added[t->n_added];
        a->id = (int32_t)id->valuedouble;
        a->len = (uint32_t)strlen(content);
        a->off = mnv__arena_add(t, content, a->len);
        a->special = get_bool(e, "special", false);
        a->lstrip = get_bool(e, "lstrip", false);
        a->rstrip = get_bool(e, "rstrip", false);
        a->single_word = get_bool(e, "single_word", false);
        a->normalized = get_bool(e, "normalized", !a->special);
        if (t->arena_oom) return mnv_set_error(MNV_ERR_NOMEM, "%s: added_tokens", path);
        i++;
        if (a->len) t->n_added++; /* an empty content can never match */
        if (a->single_word && !t->word_re) {
            /* Rust's \w; \p{Alphabetic} needs PCRE2 >= 10.40, else letters only */
            static const char w1[] = "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}]";
            static const char w2[] = "[\\p{L}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}]";
            mnv_status st = mnv__regex_compile(path, "single_word", w1, sizeof w1 - 1, &t->word_re);
            if (st != MNV_OK)
                st = mnv__regex_compile(path, "single_word", w2, sizeof w2 - 1, &t->word_re);
            if (st != MNV_OK) return st;
        }
    }
    return MNV_OK;
}

/* qsort context: C has no qsort_r in C17, so sort (key, index) records. */
typedef struct {
    uint8_t first;
    uint32_t len;
    int32_t idx;
} match_key;

static int cmp_match(const void *a, const void *b) {
    const match_key *x = a, *y = b;
    if (x->first != y->first) return x->first < y->first ? -1 : 1;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Normalize the content of normalized added tokens and build amatch/abyte. */
static mnv_status index_added(mnv_tokenizer *t, const char *path) {
    match_key *keys = calloc((size_t)t->n_added + 1, sizeof *keys);
    mnv__buf nb = {0};
    if (!keys) return mnv_set_error(MNV_ERR_NOMEM, "%s: added_tokens", path);
    for (int k = 0; k < 2; k++) {
        int n = 0;
        for (int i = 0; i < t->n_added; i++) {
            mnv__added *a = &t->added[i];
            if (a->normalized != (k == 1)) continue;
            a->noff = a->off;
            a->nlen = a->len;
            if (k == 1 && t->n_norm) {
                nb.len = 0;
                mnv__normalize(t, t->arena + a->off, a->len, NULL, &nb);
                a->noff = mnv__arena_add(t, nb.p ? nb.p : "", nb.len);
                a->nlen = (uint32_t)nb.len;
                if (!a->nlen) continue;
            }
            keys[n++] = (match_key){(uint8_t)t->arena[a->noff], a->nlen, i};
        }
        qsort(keys, (size_t)n, sizeof *keys, cmp_match);
        t->amatch[k] = malloc(((size_t)n + 1) * sizeof(int32_t));
        if (!t->amatch[k] || nb.oom || t->arena_oom) {
            free(keys);
            mnv__buf_free(&nb);
            return mnv_set_error(MNV_ERR_NOMEM, "%s: added_tokens", path);
        }
        int j = 0;
        for (int c = 0; c < 256; c++) {
            t->abyte[k][c] = (uint32_t)j;
            while (j < n && keys[j].first == c) t->amatch[k][j] = keys[j].idx, j++;
        }
        t->abyte[k][256] = (uint32_t)n;
    }
    free(keys);
    mnv__buf_free(&nb);
    return MNV_OK;
}

static mnv_status build_ids(mnv_tokenizer *t, const char *path) {
    int32_t max_id = -1;
    for (size_t i = 0; i < t->vocab_cap; i++) max_id = MNV_MAX(max_id, t->vocab[i].id);
    for (int i = 0; i < t->n_added; i++) max_id = MNV_MAX(max_id, t->added[i].id);
    if (max_id < 0) return mnv_set_error(MNV_ERR_FORMAT, "%s: model.vocab is empty", path);
    t->n_vocab = max_id + 1;
    t->id_off = calloc((size_t)t->n_vocab, sizeof *t->id_off);
    t->id_len = calloc((size_t)t->n_vocab, sizeof *t->id_len);
    t->id_flags = calloc((size_t)t->n_vocab, 1);
    if (!t->id_off || !t->id_len || !t->id_flags)
        return mnv_set_error(MNV_ERR_NOMEM, "%s: id table of %d entries", path, t->n_vocab);
    for (size_t i = 0; i < t->vocab_cap; i++) {
        const mnv__vslot *e = &t->vocab[i];
        if (e->id < 0) continue;
        t->id_off[e->id] = e->off;
        t->id_len[e->id] = e->len;
        t->id_flags[e->id] = MNV__ID_VALID;
    }
    for (int i = 0; i < t->n_added; i++) {
        const mnv__added *a = &t->added[i];
        t->id_off[a->id] = a->off;
        t->id_len[a->id] = a->len;
        t->id_flags[a->id] = MNV__ID_VALID | MNV__ID_ADDED | (a->special ? MNV__ID_SPECIAL : 0);
    }
    return MNV_OK;
}

/* ---- BOS / EOS ---------------------------------------------------------------------- */

static int32_t token_id(const mnv_tokenizer *t, const char *s) {
    if (!s) return -1;
    size_t n = strlen(s);
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].len == n && !memcmp(t->arena + t->added[i].off, s, n)) return t->added[i].id;
    return mnv__vocab_find(t, s, n);
}

/* bos_token / eos_token: "text", {"content": "text"} or null. */
static int32_t config_token(const mnv_tokenizer *t, const cJSON *v) {
    if (cJSON_IsString(v)) return token_id(t, v->valuestring);
    return token_id(t, get_str(v, "content"));
}

/* *bos = the special token a TemplateProcessing post-processor puts first,
 * or -1. An id given there must be a token of the vocabulary: encode would
 * emit it, and decode could not read it back. */
static mnv_status template_bos(const mnv_tokenizer *t, const char *path, const cJSON *pp,
                               int32_t *bos) {
    const char *type = get_str(pp, "type");
    *bos = -1;
    if (type && !strcmp(type, "Sequence")) {
        const cJSON *e;
        cJSON_ArrayForEach(e, get(pp, "processors")) {
            mnv_status st = template_bos(t, path, e, bos);
            if (st != MNV_OK || *bos >= 0) return st;
        }
        return MNV_OK;
    }
    if (!type || strcmp(type, "TemplateProcessing") != 0) return MNV_OK;
    const cJSON *single = get(pp, "single");
    const cJSON *first = cJSON_IsArray(single) ? cJSON_GetArrayItem(single, 0) : NULL;
    const char *name = get_str(get(first, "SpecialToken"), "id");
    if (!name) return MNV_OK;
    const cJSON *ids = get(get(get(pp, "special_tokens"), name), "ids");
    const cJSON *id0 = cJSON_IsArray(ids) ? cJSON_GetArrayItem(ids, 0) : NULL;
    if (!id0) {
        *bos = token_id(t, name);
        return MNV_OK;
    }
    double v = cJSON_IsNumber(id0) ? id0->valuedouble : -1;
    if (!(v >= 0 && v < t->n_vocab && v == (double)(int32_t)v) ||
        !(t->id_flags[(int32_t)v] & MNV__ID_VALID))
        return mnv_set_error(MNV_ERR_FORMAT, "%s: post_processor.special_tokens['%.64s'].ids[0]: "
                             "the first token of 'single' has id %.17g, which is no token of the "
                             "vocabulary (ids 0..%d)", path, name, cJSON_IsNumber(id0) ? v : -1.0,
                             t->n_vocab - 1);
    *bos = (int32_t)v;
    return MNV_OK;
}

static mnv_status load_config(mnv_tokenizer *t, const char *path, const cJSON *root) {
    int32_t tmpl_bos;
    mnv_status tst = template_bos(t, path, get(root, "post_processor"), &tmpl_bos);
    if (tst != MNV_OK) return tst;
    t->bos = tmpl_bos;
    t->eos = -1;
    t->add_bos = tmpl_bos >= 0;
    const char *slash = strrchr(path, '/');
    char *dir = slash ? dup_n(path, (size_t)(slash - path)) : dup_n(".", 1);
    char *cfg_path = dir ? mnv_path_join(slash == path ? "/" : dir, "tokenizer_config.json") : NULL;
    free(dir);
    if (!cfg_path) return mnv_set_error(MNV_ERR_NOMEM, "%s: config path", path);
    FILE *f = fopen(cfg_path, "rb");
    if (!f) {
        free(cfg_path);
        return MNV_OK; /* optional */
    }
    fclose(f);
    char *doc;
    size_t len;
    mnv_status st = mnv_read_file(cfg_path, &doc, &len);
    mnv_status ust = st == MNV_OK ? mnv__json_check_utf8(cfg_path, doc, len) : st;
    cJSON *cfg = ust == MNV_OK ? cJSON_ParseWithLength(doc, len) : NULL;
    if (st == MNV_OK) free(doc);
    st = ust;
    if (st == MNV_OK && !cJSON_IsObject(cfg))
        st = mnv_set_error(MNV_ERR_FORMAT, "%s: not a JSON object", cfg_path);
    if (st == MNV_OK) {
        if (get(cfg, "bos_token")) t->bos = config_token(t, get(cfg, "bos_token"));
        if (get(cfg, "eos_token")) t->eos = config_token(t, get(cfg, "eos_token"));
        const cJSON *ab = get(cfg, "add_bos_token");
        if (cJSON_IsBool(ab)) t->add_bos = cJSON_IsTrue(ab);
    }
    cJSON_Delete(cfg);
    free(cfg_path);
    return st;
}

/* ---- public ------------------------------------------------------------------------- */

static mnv_status load_all(mnv_tokenizer *t, const char *path, const char *doc, size_t len) {
    mnv__json_ranges r;
    void *rootp;
    mnv_status st = mnv__json_open(path, doc, len, &r, &rootp);
    if (st != MNV_OK) return st;
    cJSON *root = rootp;
    const cJSON *model = get(root, "model");
    if ((st = load_model(t, path, model, &r)) == MNV_OK &&
        (st = mnv__json_parse_vocab(t, path, doc, &r)) == MNV_OK &&
        (st = mnv__json_parse_merges(t, path, doc, &r)) == MNV_OK &&
        (st = load_normalizer(t, path, get(root, "normalizer"), 0)) == MNV_OK &&
        (st = load_pretok(t, path, get(root, "pre_tokenizer"), 0)) == MNV_OK &&
        (st = load_decoder(t, path, get(root, "decoder"), 0)) == MNV_OK &&
        (st = load_added(t, path, get(root, "added_tokens"))) == MNV_OK &&
        (st = index_added(t, path)) == MNV_OK && (st = build_ids(t, path)) == MNV_OK) {
        const char *unk = get_str(model, "unk_token");
        t->unk_id = unk ? mnv__vocab_find(t, unk, strlen(unk)) : -1;
        st = load_config(t, path, root);
    }
    cJSON_Delete(root);
    return st;
}

mnv_status mnv__tokenizer_load_doc(const char *path, const char *doc, size_t len,
                                   mnv_tokenizer **out) {
    *out = NULL;
    mnv_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return mnv_set_error(MNV_ERR_NOMEM, "%s: tokenizer", path);
    t->unk_id = t->bos = t->eos = -1;
    mnv_status st = load_all(t, path, doc, len);
    if (st != MNV_OK) {
        mnv_tokenizer_free(t);
        return st;
    }
    *out = t;
    return MNV_OK;
}

mnv_status mnv_tokenizer_load(const char *path, mnv_tokenizer **out) {
    if (!out) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_tokenizer_load: out is NULL");
    *out = NULL;
    if (!path) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_tokenizer_load: path is NULL");
    char *doc;
    size_t len;
    mnv_status st = mnv_read_file(path, &doc, &len);
    if (st != MNV_OK) return st;
    st = mnv__tokenizer_load_doc(path, doc, len, out);
    free(doc);
    return st;
}

void mnv_tokenizer_free(mnv_tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_norm; i++) mnv__replace_free(&t->norm[i].rep);
    for (int i = 0; i < t->n_pre; i++) {
        if (t->pre[i].re) pcre2_code_free(t->pre[i].re);
        free(t->pre[i].lit);
    }
    for (int i = 0; i < t->n_dec; i++) mnv__replace_free(&t->dec[i].rep);
    if (t->gpt2_re) pcre2_code_free(t->gpt2_re);
    if (t->word_re) pcre2_code_free(t->word_re);
    free(t->norm);
    free(t->pre);
    free(t->dec);
    free(t->added);
    free(t->amatch[0]);
    free(t->amatch[1]);
    free(t->id_off);
    free(t->id_len);
    free(t->id_flags);
    mnv_aligned_free(t->vocab);
    mnv_aligned_free(t->merges);
    free(t->arena);
    free(t);
}

int32_t mnv_tokenizer_n_vocab(const mnv_tokenizer *t) { return t ? t->n_vocab : 0; }
int32_t mnv_tokenizer_bos(const mnv_tokenizer *t) { return t ? t->bos : -1; }
int32_t mnv_tokenizer_eos(const mnv_tokenizer *t) { return t ? t->eos : -1; }
int mnv_tokenizer_add_bos(const mnv_tokenizer *t) { return t ? t->add_bos : 0; }
