/* Tokenizer utilities: growable buffers, piece lists, the vocab and merge
 * hash tables (open addressing, FNV-1a), the GPT-2 byte-level map and
 * literal/regex replacement. */
#include <stdlib.h>

#include "tokenizer/tokenizer.h"

/* ---- buffers ------------------------------------------------------------------ */

bool mnv__buf_reserve(mnv__buf *b, size_t extra) {
    if (b->oom) return false;
    if (b->len + extra <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void mnv__buf_put(mnv__buf *b, const void *s, size_t n) {
    if (!n || !mnv__buf_reserve(b, n)) return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

void mnv__buf_putc(mnv__buf *b, char c) {
    if (!mnv__buf_reserve(b, 1)) return;
    b->p[b->len++] = c;
}

void mnv__buf_put_cp(mnv__buf *b, uint32_t cp) {
    char u[4];
    mnv__buf_put(b, u, mnv__utf8_encode(cp, u));
}

void mnv__buf_free(mnv__buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- piece lists -------------------------------------------------------------- */

void mnv__plist_clear(mnv__plist *l) {
    l->text.len = 0;
    l->n = 0;
}

void mnv__plist_add(mnv__plist *l, const char *s, size_t n, bool first) {
    if (n) mnv__plist_push(l, s, n, first);
}

void mnv__plist_push(mnv__plist *l, const char *s, size_t n, bool first) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 32;
        mnv__piece *v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            l->oom = true;
            return;
        }
        l->v = v;
        l->cap = cap;
    }
    size_t off = l->text.len;
    mnv__buf_put(&l->text, s, n);
    if (l->text.oom) {
        l->oom = true;
        return;
    }
    l->v[l->n++] = (mnv__piece){off, n, first};
}

void mnv__plist_free(mnv__plist *l) {
    mnv__buf_free(&l->text);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* ---- arena and hash tables ------------------------------------------------------ */

uint32_t mnv__hash(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

uint32_t mnv__arena_add(mnv_tokenizer *t, const char *s, size_t n) {
    if (t->arena_len + n > t->arena_cap) {
        size_t cap = t->arena_cap ? t->arena_cap : 4096;
        while (cap < t->arena_len + n) cap *= 2;
        char *p = cap <= UINT32_MAX ? realloc(t->arena, cap) : NULL;
        if (!p) {
            t->arena_oom = true;
            return 0;
        }
        t->arena = p;
        t->arena_cap = cap;
    }
    uint32_t off = (uint32_t)t->arena_len;
    memcpy(t->arena + off, s, n);
    t->arena_len += n;
    return off;
}

_Static_assert(sizeof(mnv__vslot) == 32, "vocab slot is half a cache line");

static inline bool slot_is(const mnv_tokenizer *t, const mnv__vslot *e, uint32_t h, const char *s,
                           size_t n) {
    return e->hash == h && e->len == n &&
           memcmp(n <= sizeof e->inl ? e->inl : t->arena + e->off, s, n) == 0;
}

int32_t mnv__vocab_find(const mnv_tokenizer *t, const char *s, size_t n) {
    return mnv__vocab_find_h(t, s, n, mnv__hash(s, n));
}

uint32_t mnv__vocab_prefetch(const mnv_tokenizer *t, const char *s, size_t n) {
    uint32_t h = mnv__hash(s, n);
    if (t->vocab_cap) __builtin_prefetch(&t->vocab[h & (t->vocab_cap - 1)]);
    return h;
}

int32_t mnv__vocab_find_h(const mnv_tokenizer *t, const char *s, size_t n, uint32_t h) {
    if (!t->vocab_cap) return -1;
    size_t mask = t->vocab_cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        const mnv__vslot *e = &t->vocab[i];
        if (e->id < 0) return -1;
        if (slot_is(t, e, h, s, n)) return e->id;
    }
}

/* Rehash into cap slots (a power of two, 64-byte aligned). */
static bool vocab_resize(mnv_tokenizer *t, size_t cap) {
    mnv__vslot *v = mnv_aligned_alloc(64, cap * sizeof *v);
    if (!v) return false;
    for (size_t i = 0; i < cap; i++) v[i].id = -1;
    for (size_t j = 0; j < t->vocab_cap; j++) {
        const mnv__vslot *e = &t->vocab[j];
        if (e->id < 0) continue;
        size_t i = e->hash & (cap - 1);
        while (v[i].id >= 0) i = (i + 1) & (cap - 1);
        v[i] = *e;
    }
    mnv_aligned_free(t->vocab);
    t->vocab = v;
    t->vocab_cap = cap;
    return true;
}

static size_t pow2_for(size_t n) {
    size_t cap = 1024;
    while (cap < 2 * n) cap *= 2;
    return cap;
}

mnv_status mnv__vocab_reserve(mnv_tokenizer *t, size_t n) {
    if (pow2_for(n) > t->vocab_cap && !vocab_resize(t, pow2_for(n)))
        return mnv_set_error(MNV_ERR_NOMEM, "tokenizer vocab table (%zu entries)", n);
    return MNV_OK;
}

mnv_status mnv__vocab_insert(mnv_tokenizer *t, const char *s, size_t n, int32_t id) {
    return mnv__vocab_insert_h(t, s, n, id, mnv__hash(s, n));
}

mnv_status mnv__vocab_insert_h(mnv_tokenizer *t, const char *s, size_t n, int32_t id, uint32_t h) {
    if ((t->vocab_count + 1) * 2 > t->vocab_cap && !vocab_resize(t, pow2_for(t->vocab_count + 1)))
        return mnv_set_error(MNV_ERR_NOMEM, "tokenizer vocab table");
    size_t mask = t->vocab_cap - 1;
    size_t i = h & mask;
    for (;; i = (i + 1) & mask) {
        mnv__vslot *e = &t->vocab[i];
        if (e->id < 0) break;
        if (slot_is(t, e, h, s, n)) {
            e->id = id;
            return MNV_OK;
        }
    }
    uint32_t off = mnv__arena_add(t, s, n);
    if (t->arena_oom) return mnv_set_error(MNV_ERR_NOMEM, "tokenizer string arena");
    mnv__vslot *e = &t->vocab[i];
    *e = (mnv__vslot){h, id, off, (uint32_t)n, {0}};
    if (n <= sizeof e->inl) memcpy(e->inl, s, n);
    t->vocab_count++;
    return MNV_OK;
}

static inline size_t merge_slot(uint64_t key, size_t mask) {
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    return (size_t)key & mask;
}

void mnv__merge_prefetch(const mnv_tokenizer *t, int32_t a, int32_t b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    if (t->merges_cap) __builtin_prefetch(&t->merges[merge_slot(key, t->merges_cap - 1)], 1);
}

bool mnv__merge_find(const mnv_tokenizer *t, int32_t a, int32_t b, int32_t *rank, int32_t *id) {
    if (!t->merges_cap) return false;
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t mask = t->merges_cap - 1;
    for (size_t i = merge_slot(key, mask);; i = (i + 1) & mask) {
        const mnv__mslot *e = &t->merges[i];
        if (e->key == UINT64_MAX) return false;
        if (e->key == key) {
            *rank = e->rank;
            *id = e->id;
            return true;
        }
    }
}

static bool merges_resize(mnv_tokenizer *t, size_t cap) {
    mnv__mslot *v = mnv_aligned_alloc(64, cap * sizeof *v);
    if (!v) return false;
    for (size_t i = 0; i < cap; i++) v[i].key = UINT64_MAX;
    for (size_t j = 0; j < t->merges_cap; j++) {
        mnv__mslot e = t->merges[j];
        if (e.key == UINT64_MAX) continue;
        size_t i = merge_slot(e.key, cap - 1);
        while (v[i].key != UINT64_MAX) i = (i + 1) & (cap - 1);
        v[i] = e;
    }
    mnv_aligned_free(t->merges);
    t->merges = v;
    t->merges_cap = cap;
    return true;
}

mnv_status mnv__merge_reserve(mnv_tokenizer *t, size_t n) {
    if (pow2_for(n) > t->merges_cap && !merges_resize(t, pow2_for(n)))
        return mnv_set_error(MNV_ERR_NOMEM, "tokenizer merge table (%zu entries)", n);
    return MNV_OK;
}

mnv_status mnv__merge_insert(mnv_tokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t id) {
    if ((t->merges_count + 1) * 2 > t->merges_cap &&
        !merges_resize(t, pow2_for(t->merges_count + 1)))
        return mnv_set_error(MNV_ERR_NOMEM, "tokenizer merge table");
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t mask = t->merges_cap - 1;
    size_t i = merge_slot(key, mask);
    while (t->merges[i].key != UINT64_MAX && t->merges[i].key != key) i = (i + 1) & mask;
    if (t->merges[i].key == UINT64_MAX) t->merges_count++;
    /* A repeated pair takes the later rank (HF builds its merge map that way). */
    t->merges[i] = (mnv__mslot){key, rank, id};
    return MNV_OK;
}

/* ---- GPT-2 bytes_to_unicode ------------------------------------------------------ */

static bool printable_byte(unsigned b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

uint32_t mnv__bytelevel_cp(uint8_t b) {
    if (printable_byte(b)) return b;
    /* the others, in byte order, map to 256, 257, ...: 0x00-0x20, 0x7F-0xA0, 0xAD */
    if (b <= 0x20) return 256u + b;
    if (b <= 0xA0) return 256u + 33 + (b - 0x7Fu);
    return 256u + 67; /* 0xAD */
}

int mnv__bytelevel_byte(uint32_t cp) {
    if (cp < 256) return printable_byte(cp) ? (int)cp : -1;
    if (cp >= 256 + 68) return -1;
    unsigned n = cp - 256;
    if (n < 33) return (int)n;
    if (n < 67) return (int)(0x7F + n - 33);
    return 0xAD;
}

/* ---- replace ----------------------------------------------------------------------- */

static void replace_literal(const mnv__replace *r, const char *s, size_t n, mnv__buf *out) {
    size_t i = 0;
    if (!r->pat_len) {
        mnv__buf_put(out, s, n);
        return;
    }
    while (i < n) {
        const char *hit = n - i >= r->pat_len ? memmem(s + i, n - i, r->pat, r->pat_len) : NULL;
        if (!hit) break;
        size_t at = (size_t)(hit - s);
        mnv__buf_put(out, s + i, at - i);
        mnv__buf_put(out, r->content, r->content_len);
        i = at + r->pat_len;
    }
    mnv__buf_put(out, s + i, n - i);
}

static bool re_match(const pcre2_code *re, const char *s, size_t n, size_t from,
                     pcre2_match_data *md, size_t *b, size_t *e) {
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, md, NULL);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
        rc = pcre2_match(re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
    if (rc < 0) return false;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    *b = ov[0];
    *e = ov[1];
    return true;
}

bool mnv__re_find(const pcre2_code *re, const char *s, size_t n, size_t from, bool valid,
                  pcre2_match_data *md, size_t *b, size_t *e) {
    if (valid) return re_match(re, s, n, from, md, b, e);
    /* PCRE2 with NO_UTF_CHECK on invalid UTF-8 is undefined behaviour (the JIT
     * crashes): search each maximal valid run on its own. */
    for (size_t i = from; i < n;) {
        size_t end = i;
        uint32_t cp;
        while (end < n) {
            size_t l = (uint8_t)s[end] < 0x80 ? 1 : mnv__utf8_next(s + end, n - end, &cp);
            if (!l) break;
            end += l;
        }
        if (end > i && re_match(re, s + i, end - i, 0, md, b, e)) {
            *b += i;
            *e += i;
            return true;
        }
        i = end + 1; /* past the invalid byte */
    }
    return false;
}

void mnv__replace_apply(const mnv__replace *r, const char *s, size_t n, pcre2_match_data *md,
                        mnv__buf *out) {
    if (!r->re || !md) {
        replace_literal(r, s, n, out);
        return;
    }
    bool valid = mnv__utf8_valid(s, n, NULL);
    size_t i = 0, from = 0, mb, me;
    while (from <= n && mnv__re_find(r->re, s, n, from, valid, md, &mb, &me)) {
        mnv__buf_put(out, s + i, mb - i);
        mnv__buf_put(out, r->content, r->content_len);
        i = me;
        if (me > mb) {
            from = me;
        } else { /* empty match: step over one character */
            if (mb >= n) break;
            uint32_t cp;
            size_t l = mnv__utf8_next(s + mb, n - mb, &cp);
            mnv__buf_put(out, s + mb, l ? l : 1);
            from = i = mb + (l ? l : 1);
        }
    }
    if (i < n) mnv__buf_put(out, s + i, n - i);
}

void mnv__replace_free(mnv__replace *r) {
    free(r->pat);
    free(r->content);
    if (r->re) pcre2_code_free(r->re);
    memset(r, 0, sizeof *r);
}
