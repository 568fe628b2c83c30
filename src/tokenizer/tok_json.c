/* Fast reading of a tokenizer.json.
 *
 * model.vocab (hundreds of thousands of entries) and model.merges (up to half
 * a million pairs) make up nearly all of a large tokenizer.json. Parsing them
 * into a cJSON tree costs millions of small allocations (~0.5 s for gpt-oss's
 * 28 MB file), so they are located by a light scan, parsed by the strict
 * readers below straight into the string arena and hash tables, and the rest
 * of the document - with those two values replaced by {} and [] - goes to
 * cJSON. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>

#include "tokenizer/tokenizer.h"

typedef struct {
    const char *doc, *p, *end;
    const char *path;
} scan;

static void ws(scan *s) {
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
        s->p++;
}

static size_t at(const scan *s) { return (size_t)(s->p - s->doc); }

static mnv_status fail(const scan *s, const char *what) {
    return mnv_set_error(MNV_ERR_FORMAT, "%s: invalid JSON at byte %zu: %s", s->path, at(s), what);
}

/* p at an opening quote: move past the closing one. */
static bool skip_string(scan *s) {
    s->p++;
    while (s->p < s->end) {
        const char *q = memchr(s->p, '"', (size_t)(s->end - s->p));
        if (!q) break;
        size_t bs = 0; /* count the backslashes before the quote */
        while (q - bs > s->p && q[-1 - (long)bs] == '\\') bs++;
        s->p = q + 1;
        if (bs % 2 == 0) return true;
    }
    s->p = s->end;
    return false;
}

static const uint8_t k_structural[256] = {['"'] = 1, ['{'] = 1, ['}'] = 1, ['['] = 1, [']'] = 1};

/* Skip one value of any kind (structure only: cJSON or the strict readers
 * validate everything that is actually used). */
static bool skip_value(scan *s) {
    ws(s);
    if (s->p >= s->end) return false;
    if (*s->p == '"') return skip_string(s);
    if (*s->p != '{' && *s->p != '[') { /* scalar: runs until a delimiter */
        const char *b = s->p;
        while (s->p < s->end && !strchr(",}] \t\r\n", *s->p)) s->p++;
        return s->p > b;
    }
    for (int depth = 0;;) {
        while (s->p < s->end && !k_structural[(uint8_t)*s->p]) s->p++;
        if (s->p >= s->end) return false;
        char c = *s->p;
        if (c == '"') {
            if (!skip_string(s)) return false;
            continue;
        }
        s->p++;
        if (c == '{' || c == '[') depth++;
        else if (--depth == 0) return true;
    }
}

/* Read a string key (no escapes expected in the keys we look for) and compare. */
static bool key_is(scan *s, const char *key, bool *match) {
    if (s->p >= s->end || *s->p != '"') return false;
    const char *beg = s->p + 1;
    if (!skip_string(s)) return false;
    size_t n = (size_t)(s->p - 1 - beg);
    *match = n == strlen(key) && memcmp(beg, key, n) == 0;
    ws(s);
    if (s->p >= s->end || *s->p != ':') return false;
    s->p++;
    ws(s);
    return true;
}

/* Walk the top-level object and the first "model" object inside it, noting
 * where the values of model.vocab and model.merges begin and end. */
static mnv_status find_model_ranges(scan *s, mnv__json_ranges *r) {
    ws(s);
    if (s->p >= s->end || *s->p != '{') return fail(s, "expected '{' at the top level");
    s->p++;
    int in_model = 0;
    for (;;) {
        ws(s);
        if (s->p < s->end && *s->p == '}') {
            s->p++;
            if (in_model) { /* back to the top-level object */
                in_model = 0;
                ws(s);
                if (s->p < s->end && *s->p == ',') s->p++;
                continue;
            }
            return MNV_OK;
        }
        bool is_model = false, is_vocab = false, is_merges = false;
        const char *kpos = s->p;
        if (!key_is(s, "model", &is_model)) return fail(s, "expected a \"key\":");
        if (in_model) {
            scan k = *s;
            k.p = kpos;
            key_is(&k, "vocab", &is_vocab);
            k.p = kpos;
            key_is(&k, "merges", &is_merges);
        }
        if (!in_model && is_model && s->p < s->end && *s->p == '{' && !r->model_seen) {
            r->model_seen = true;
            s->p++;
            in_model = 1;
            continue;
        }
        size_t beg = at(s);
        if (!skip_value(s)) return fail(s, "unterminated or malformed value");
        if (is_vocab && !r->vocab_end) r->vocab_beg = beg, r->vocab_end = at(s);
        if (is_merges && !r->merges_end) r->merges_beg = beg, r->merges_end = at(s);
        ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
        } else if (s->p >= s->end || *s->p != '}') {
            return fail(s, "expected ',' or '}'");
        }
    }
}

/* ---- UTF-8 check of the whole document ------------------------------------------------
 * JSON text is UTF-8 (RFC 8259) and Hugging Face reads tokenizer.json into a
 * Rust String, so a file with a raw invalid byte anywhere is refused there;
 * here it is refused too, naming the key whose string holds the byte. Every
 * string of the tokenizer is then valid UTF-8, as the encoding pipeline and
 * its PCRE2 searches expect. */

#define PATH_DEPTH 24

typedef struct {
    const char *key; /* object member: key text (NULL: array element) */
    size_t key_len, index;
    bool in_obj, want_key;
} path_frame;

/* Append the path of frames[0..n) to out ("normalizer.normalizers[1].content"). */
static void path_print(const path_frame *f, int n, int depth, mnv__buf *out) {
    size_t mark = out->len;
    for (int i = 0; i < n; i++) {
        if (f[i].in_obj && f[i].key) {
            if (out->len > mark) mnv__buf_putc(out, '.');
            size_t kl = MNV_MIN(f[i].key_len, 64);
            while (kl < f[i].key_len && kl > 0 && ((uint8_t)f[i].key[kl] & 0xC0) == 0x80) kl--;
            mnv__buf_put(out, f[i].key, kl); /* cut at a character boundary */
        } else if (!f[i].in_obj) {
            char idx[32];
            snprintf(idx, sizeof idx, "[%zu]", f[i].index);
            mnv__buf_put(out, idx, strlen(idx));
        }
    }
    if (depth > n) mnv__buf_put(out, "...", 3);
}

/* Describe where byte off of doc lies: "the string P", "a key of P" or "the
 * text outside any string". Only the document before off is read (so every
 * key printed is valid UTF-8). */
static void describe_offset(const char *doc, size_t off, mnv__buf *out) {
    path_frame f[PATH_DEPTH];
    int depth = 0;
    scan s = {doc, doc, doc + off, ""};
    while (s.p < s.end) {
        char c = *s.p;
        path_frame *top = depth > 0 && depth <= PATH_DEPTH ? &f[depth - 1] : NULL;
        if (c == '{' || c == '[') {
            if (depth < PATH_DEPTH) f[depth] = (path_frame){NULL, 0, 0, c == '{', c == '{'};
            depth++;
            s.p++;
        } else if (c == '}' || c == ']') {
            if (depth > 0) depth--;
            s.p++;
        } else if (c == ',') {
            if (top) {
                top->index++;
                top->want_key = top->in_obj;
            }
            s.p++;
        } else if (c == '"') {
            const char *beg = s.p + 1;
            if (!skip_string(&s)) { /* the string holding off */
                int k = top && top->in_obj && top->want_key; /* a key: the path of its object */
                mnv__buf_put(out, k ? "a key of " : "the string ", k ? 9 : 11);
                size_t mark = out->len;
                path_print(f, MNV_MIN(depth, PATH_DEPTH) - k, depth - k, out);
                if (out->len == mark) mnv__buf_put(out, "(top level)", 11);
                return;
            }
            if (top && top->in_obj && top->want_key) {
                top->key = beg;
                top->key_len = (size_t)(s.p - 1 - beg);
                top->want_key = false;
            }
        } else {
            s.p++;
        }
    }
    mnv__buf_put(out, "the text outside any string", 27);
}

mnv_status mnv__json_check_utf8(const char *path, const char *doc, size_t len) {
    size_t bad;
    if (mnv__utf8_valid(doc, len, &bad)) return MNV_OK;
    mnv__buf where = {0};
    describe_offset(doc, bad, &where);
    mnv_status st = mnv_set_error(MNV_ERR_FORMAT, "%s: %.*s is not valid UTF-8 (byte %zu of the "
                                  "file, 0x%02X); JSON text must be UTF-8", path,
                                  (int)where.len, where.p ? where.p : "", bad, (uint8_t)doc[bad]);
    mnv__buf_free(&where);
    return st;
}

typedef struct {
    size_t beg, end;
    const char *with;
} cut_range;

mnv_status mnv__json_open(const char *path, const char *doc, size_t len, mnv__json_ranges *r,
                          void **root_out) {
    *root_out = NULL;
    memset(r, 0, sizeof *r);
    mnv_status st = mnv__json_check_utf8(path, doc, len);
    if (st != MNV_OK) return st;
    scan s = {doc, doc, doc + len, path};
    st = find_model_ranges(&s, r);
    if (st != MNV_OK) return st;
    /* The document minus vocab and merges (replaced by {} and []). */
    char *rest = malloc(len + 8);
    if (!rest) return mnv_set_error(MNV_ERR_NOMEM, "%s: %zu bytes", path, len);
    size_t n = 0, pos = 0;
    cut_range cut[2] = {{r->vocab_beg, r->vocab_end, "{}"}, {r->merges_beg, r->merges_end, "[]"}};
    if (cut[1].beg < cut[0].beg) {
        cut_range tmp = cut[0];
        cut[0] = cut[1];
        cut[1] = tmp;
    }
    for (int i = 0; i < 2; i++) {
        if (!cut[i].end) continue;
        memcpy(rest + n, doc + pos, cut[i].beg - pos);
        n += cut[i].beg - pos;
        memcpy(rest + n, cut[i].with, 2);
        n += 2;
        pos = cut[i].end;
    }
    memcpy(rest + n, doc + pos, len - pos);
    n += len - pos;
    cJSON *root = cJSON_ParseWithLength(rest, n);
    if (!root) {
        const char *e = cJSON_GetErrorPtr();
        size_t off = e && e >= rest && e <= rest + n ? (size_t)(e - rest) : 0;
        free(rest);
        return mnv_set_error(MNV_ERR_FORMAT, "%s: not valid JSON (near byte %zu of the document "
                             "without model.vocab/merges)", path, off);
    }
    free(rest);
    *root_out = root;
    return MNV_OK;
}

/* ---- strict readers for strings, vocab and merges ------------------------------ */

static size_t count_byte(const char *p, const char *end, char c) {
    size_t n = 0;
    while ((p = memchr(p, c, (size_t)(end - p))) != NULL) {
        n++;
        p++;
    }
    return n;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool read_u4(scan *s, uint32_t *v) {
    if (s->end - s->p < 4) return false;
    *v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(s->p[i]);
        if (h < 0) return false;
        *v = *v << 4 | (uint32_t)h;
    }
    s->p += 4;
    return true;
}

static bool read_escape(scan *s, mnv__buf *out) {
    char c = *s->p++;
    const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
    const char *k = strchr(from, c);
    if (c && k) {
        mnv__buf_putc(out, to[k - from]);
        return true;
    }
    uint32_t cp, lo;
    if (c != 'u' || !read_u4(s, &cp)) return false;
    if (cp >= 0xD800 && cp < 0xDC00) { /* surrogate pair */
        if (s->end - s->p >= 6 && s->p[0] == '\\' && s->p[1] == 'u') {
            s->p += 2;
            if (!read_u4(s, &lo) || lo < 0xDC00 || lo > 0xDFFF) return false;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else {
            cp = 0xFFFD;
        }
    } else if (cp >= 0xDC00 && cp < 0xE000) {
        cp = 0xFFFD;
    }
    mnv__buf_put_cp(out, cp);
    return true;
}

/* p at an opening quote: decode the string, appending it to out. */
static bool append_string(scan *s, mnv__buf *out) {
    if (s->p >= s->end || *s->p != '"') return false;
    s->p++;
    for (;;) {
        const char *q = s->p;
        while (q < s->end && *q != '"' && *q != '\\' && (uint8_t)*q >= 0x20) q++;
        mnv__buf_put(out, s->p, (size_t)(q - s->p));
        s->p = q;
        if (q >= s->end || (uint8_t)*q < 0x20) return false;
        s->p++;
        if (*q == '"') return !out->oom;
        if (s->p >= s->end || !read_escape(s, out)) return false;
    }
}

/* The same into a cleared out. */
static bool read_string(scan *s, mnv__buf *out) {
    out->len = 0;
    return append_string(s, out);
}

static bool read_id(scan *s, int64_t *v) {
    const char *q = s->p;
    int64_t x = 0;
    if (q < s->end && *q == '-') return false;
    while (q < s->end && *q >= '0' && *q <= '9' && x <= MNV__TOK_MAX_ID) x = x * 10 + (*q++ - '0');
    if (q == s->p) return false;
    if (q < s->end && (*q == '.' || *q == 'e' || *q == 'E' || (*q >= '0' && *q <= '9')))
        return false;
    s->p = q;
    *v = x;
    return true;
}

/* Vocab entries are inserted in batches, their slots prefetched first (see
 * the merges below). */
#define VOCAB_BATCH 64

typedef struct {
    mnv__buf text;
    size_t off[VOCAB_BATCH], len[VOCAB_BATCH];
    uint32_t hash[VOCAB_BATCH];
    int32_t id[VOCAB_BATCH];
    int n;
} vocab_batch;

static mnv_status vocab_flush(mnv_tokenizer *t, const char *path, vocab_batch *vb) {
    if (vb->text.oom) return mnv_set_error(MNV_ERR_NOMEM, "%s: vocab", path);
    const char *x = vb->text.p ? vb->text.p : ""; /* NULL while every key so far is "" */
    for (int i = 0; i < vb->n; i++)
        vb->hash[i] = mnv__vocab_prefetch(t, x + vb->off[i], vb->len[i]);
    for (int i = 0; i < vb->n; i++) {
        mnv_status st = mnv__vocab_insert_h(t, x + vb->off[i], vb->len[i], vb->id[i],
                                            vb->hash[i]);
        if (st != MNV_OK) return st;
    }
    vb->n = 0;
    vb->text.len = 0;
    return MNV_OK;
}

/* One "key": id entry into the batch. */
static mnv_status read_vocab_entry(scan *s, size_t i, vocab_batch *vb) {
    int64_t id;
    size_t off = vb->text.len;
    if (!append_string(s, &vb->text)) return fail(s, "model.vocab: bad key string");
    ws(s);
    if (s->p >= s->end || *s->p++ != ':') return fail(s, "model.vocab: expected ':'");
    ws(s);
    if (!read_id(s, &id) || id >= MNV__TOK_MAX_ID)
        return mnv_set_error(MNV_ERR_FORMAT, "%s: model.vocab entry %zu: id of token '%.*s' is not "
                             "an integer in [0, %d) (byte %zu)", s->path, i,
                             (int)MNV_MIN(vb->text.len - off, 64), vb->text.p ? vb->text.p + off : "",
                             MNV__TOK_MAX_ID, at(s));
    vb->off[vb->n] = off;
    vb->len[vb->n] = vb->text.len - off;
    vb->id[vb->n++] = (int32_t)id;
    return MNV_OK;
}

mnv_status mnv__json_parse_vocab(mnv_tokenizer *t, const char *path, const char *doc,
                                 const mnv__json_ranges *r) {
    scan s = {doc, doc + r->vocab_beg, doc + r->vocab_end, path};
    mnv_status st = MNV_OK;
    if (*s.p != '{') return mnv_set_error(MNV_ERR_FORMAT, "%s: model.vocab is not an object", path);
    /* Keys unescape to at most their JSON length: size the arena once. */
    if (!t->arena_cap) {
        t->arena = malloc(r->vocab_end - r->vocab_beg + 4096);
        if (!t->arena) return mnv_set_error(MNV_ERR_NOMEM, "%s: vocab arena", path);
        t->arena_cap = r->vocab_end - r->vocab_beg + 4096;
    }
    if ((st = mnv__vocab_reserve(t, count_byte(s.p, s.end, '"') / 2)) != MNV_OK) return st;
    s.p++;
    ws(&s);
    if (s.p < s.end && *s.p == '}') return MNV_OK;
    vocab_batch *vb = calloc(1, sizeof *vb);
    if (!vb) return mnv_set_error(MNV_ERR_NOMEM, "%s: vocab", path);
    for (size_t i = 0;; i++) {
        ws(&s);
        if ((st = read_vocab_entry(&s, i, vb)) != MNV_OK) break;
        if (vb->n == VOCAB_BATCH && (st = vocab_flush(t, path, vb)) != MNV_OK) break;
        ws(&s);
        if (s.p < s.end && *s.p == ',') {
            s.p++;
            continue;
        }
        if (s.p < s.end && *s.p == '}') {
            st = vocab_flush(t, path, vb);
            break;
        }
        st = fail(&s, "model.vocab: expected ',' or '}'");
        break;
    }
    mnv__buf_free(&vb->text);
    free(vb);
    return st;
}

/* Merges are read in batches: the strings of a batch are parsed first, then
 * all their vocab slots are prefetched, then looked up, then the merge slots
 * prefetched and filled. With tables far larger than the caches this hides
 * most of the memory latency that otherwise dominates loading. */
#define MERGE_BATCH 64

typedef struct {
    size_t a, alen, b, blen, ab; /* offsets into text; ab has length alen + blen */
    uint32_t ha, hb, hab;
    int32_t ia, ib, iab;
    size_t rank;
} merge_ent;

typedef struct {
    mnv__buf text;
    merge_ent e[MERGE_BATCH];
    int n;
} merge_batch;

static void batch_add(merge_batch *mb, size_t rank, const char *a, size_t alen, const char *b,
                      size_t blen) {
    merge_ent *m = &mb->e[mb->n++];
    m->rank = rank;
    m->alen = alen;
    m->blen = blen;
    m->a = mb->text.len;
    mnv__buf_put(&mb->text, a, alen);
    m->b = mb->text.len;
    mnv__buf_put(&mb->text, b, blen);
    m->ab = mb->text.len;
    mnv__buf_put(&mb->text, a, alen);
    mnv__buf_put(&mb->text, b, blen);
}

static mnv_status batch_flush(mnv_tokenizer *t, const char *path, merge_batch *mb) {
    const char *x = mb->text.p ? mb->text.p : "";
    if (mb->text.oom) return mnv_set_error(MNV_ERR_NOMEM, "%s: merges", path);
    for (int i = 0; i < mb->n; i++) {
        merge_ent *m = &mb->e[i];
        m->ha = mnv__vocab_prefetch(t, x + m->a, m->alen);
        m->hb = mnv__vocab_prefetch(t, x + m->b, m->blen);
        m->hab = mnv__vocab_prefetch(t, x + m->ab, m->alen + m->blen);
    }
    for (int i = 0; i < mb->n; i++) {
        merge_ent *m = &mb->e[i];
        m->ia = mnv__vocab_find_h(t, x + m->a, m->alen, m->ha);
        m->ib = mnv__vocab_find_h(t, x + m->b, m->blen, m->hb);
        m->iab = mnv__vocab_find_h(t, x + m->ab, m->alen + m->blen, m->hab);
        if (m->ia < 0 || m->ib < 0) {
            size_t off = m->ia < 0 ? m->a : m->b, len = m->ia < 0 ? m->alen : m->blen;
            return mnv_set_error(MNV_ERR_FORMAT, "%s: model.merges[%zu]: token '%.*s' is not in "
                                 "model.vocab", path, m->rank, (int)MNV_MIN(len, 200), x + off);
        }
        if (m->iab < 0)
            return mnv_set_error(MNV_ERR_FORMAT, "%s: model.merges[%zu]: merged token '%.*s' is "
                                 "not in model.vocab", path, m->rank,
                                 (int)MNV_MIN(m->alen + m->blen, 200), x + m->ab);
        if (m->rank >= INT32_MAX) return mnv_set_error(MNV_ERR_FORMAT, "%s: too many merges", path);
        mnv__merge_prefetch(t, m->ia, m->ib);
    }
    for (int i = 0; i < mb->n; i++) {
        const merge_ent *m = &mb->e[i];
        mnv_status st = mnv__merge_insert(t, m->ia, m->ib, (int32_t)m->rank, m->iab);
        if (st != MNV_OK) return st;
    }
    mb->n = 0;
    mb->text.len = 0;
    return MNV_OK;
}

/* One merge, "a b" or ["a", "b"], into the batch. */
static mnv_status read_merge(scan *s, size_t rank, mnv__buf *ka, mnv__buf *kb, merge_batch *mb) {
    if (s->p < s->end && *s->p == '"') {
        if (!read_string(s, ka)) return fail(s, "model.merges: bad string");
        const char *sp = ka->len ? memchr(ka->p, ' ', ka->len) : NULL;
        if (!sp)
            return mnv_set_error(MNV_ERR_FORMAT, "%s: model.merges[%zu]: '%.*s' is not two tokens "
                                 "separated by a space", s->path, rank, (int)MNV_MIN(ka->len, 200),
                                 ka->len ? ka->p : "");
        size_t alen = (size_t)(sp - ka->p);
        batch_add(mb, rank, ka->p, alen, sp + 1, ka->len - alen - 1);
        return MNV_OK;
    }
    if (s->p >= s->end || *s->p != '[') return fail(s, "model.merges: expected a string or a pair");
    s->p++;
    ws(s);
    if (!read_string(s, ka)) return fail(s, "model.merges: bad pair");
    ws(s);
    if (s->p >= s->end || *s->p++ != ',') return fail(s, "model.merges: expected ',' in a pair");
    ws(s);
    if (!read_string(s, kb)) return fail(s, "model.merges: bad pair");
    ws(s);
    if (s->p >= s->end || *s->p++ != ']') return fail(s, "model.merges: a pair has two strings");
    batch_add(mb, rank, ka->p ? ka->p : "", ka->len, kb->p ? kb->p : "", kb->len);
    return MNV_OK;
}

mnv_status mnv__json_parse_merges(mnv_tokenizer *t, const char *path, const char *doc,
                                  const mnv__json_ranges *r) {
    if (!r->merges_end) return MNV_OK;
    scan s = {doc, doc + r->merges_beg, doc + r->merges_end, path};
    if (*s.p != '[') return mnv_set_error(MNV_ERR_FORMAT, "%s: model.merges is not an array", path);
    s.p++;
    ws(&s);
    if (s.p < s.end && *s.p == ']') return MNV_OK;
    /* upper bound on the count: '[' per pair, or two quotes per "a b" string */
    size_t est = *s.p == '[' ? count_byte(s.p, s.end, '[') : count_byte(s.p, s.end, '"') / 2;
    mnv_status st = mnv__merge_reserve(t, est);
    if (st != MNV_OK) return st;
    mnv__buf ka = {0}, kb = {0};
    merge_batch *mb = calloc(1, sizeof *mb);
    if (!mb) return mnv_set_error(MNV_ERR_NOMEM, "%s: merges", path);
    for (size_t rank = 0;; rank++) {
        ws(&s);
        if ((st = read_merge(&s, rank, &ka, &kb, mb)) != MNV_OK) break;
        if (mb->n == MERGE_BATCH && (st = batch_flush(t, path, mb)) != MNV_OK) break;
        ws(&s);
        if (s.p < s.end && *s.p == ',') {
            s.p++;
            continue;
        }
        if (s.p < s.end && *s.p == ']') {
            st = batch_flush(t, path, mb);
            break;
        }
        st = fail(&s, "model.merges: expected ',' or ']'");
        break;
    }
    mnv__buf_free(&ka);
    mnv__buf_free(&kb);
    mnv__buf_free(&mb->text);
    free(mb);
    return st;
}
