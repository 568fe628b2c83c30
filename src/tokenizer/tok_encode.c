/* mnv_tokenize: the encoding pipeline of a Hugging Face tokenizer, step by
 * step as `tokenizers` runs it:
 *   1. added tokens are cut out of the raw text (leftmost, longest first);
 *   2. each piece of text between them is normalized,
 *   3. split by the pre-tokenizers (regex Split, ByteLevel, Metaspace),
 *   4. and each resulting word is encoded by BPE: merges applied lowest rank
 *      first (leftmost on ties) with a binary heap over a linked list of
 *      symbols, byte fallback / unk for characters outside the vocab.
 * All scratch memory lives in a per-call context: a loaded tokenizer is
 * read-only and may be shared by threads. */
#include <stdio.h>
#include <stdlib.h>

#include "tokenizer/tokenizer.h"

typedef struct {
    int32_t id, prev, next;
    uint32_t len; /* 0: merged into its left neighbour */
} sym;

typedef struct {
    int32_t rank, pos, id;
} cand;

typedef struct {
    size_t beg, end;
    bool match;
} span;

typedef struct {
    const mnv_tokenizer *t;
    int32_t *ids;
    size_t n, cap;
    bool oom;
    mnv__buf nb[2];      /* normalizer ping-pong */
    mnv__buf tmp;        /* pre-tokenizer scratch */
    mnv__plist pl[2];    /* pre-tokenizer ping-pong */
    span *sp;            /* split scratch */
    size_t nsp, capsp;
    sym *syms;
    size_t capsyms;
    cand *heap;
    size_t nheap, capheap;
    pcre2_match_data *md;
    bool ordinary;       /* match no added tokens (tiktoken's encode_ordinary) */
} enc;

static bool grow(void **p, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * size);
    if (!q) return false;
    *p = q;
    *cap = c;
    return true;
}

static void push_id(enc *e, int32_t id) {
    if (!grow((void **)&e->ids, &e->cap, e->n + 1, sizeof *e->ids)) {
        e->oom = true;
        return;
    }
    e->ids[e->n++] = id;
}

/* ---- regex / literal matching ------------------------------------------------------ */

static void add_span(enc *e, size_t b, size_t en, bool match) {
    if (!grow((void **)&e->sp, &e->capsp, e->nsp + 1, sizeof *e->sp)) {
        e->oom = true;
        return;
    }
    e->sp[e->nsp++] = (span){b, en, match};
}

static size_t char_len(const char *s, size_t n) {
    uint32_t cp;
    size_t l = mnv__utf8_next(s, n, &cp);
    return l ? l : 1;
}

/* Cover s with spans, matches of the pattern flagged (HF find_matches). */
static void find_spans(enc *e, const pcre2_code *re, const char *lit, size_t lit_len,
                       const char *s, size_t n) {
    size_t prev = 0, from = 0, b, en;
    bool valid = !re || mnv__utf8_valid(s, n, NULL); /* always, unless a step broke UTF-8 */
    e->nsp = 0;
    while (from < n) {
        if (re) {
            if (!mnv__re_find(re, s, n, from, valid, e->md, &b, &en)) break;
        } else {
            const char *hit = lit_len ? memmem(s + from, n - from, lit, lit_len) : NULL;
            if (!hit) break;
            b = (size_t)(hit - s);
            en = b + lit_len;
        }
        if (prev != b) add_span(e, prev, b, false);
        add_span(e, b, en, true);
        prev = en;
        from = en > b ? en : b + char_len(s + b, n - b);
    }
    if (prev != n) add_span(e, prev, n, false);
}

/* Apply a split behavior to e->sp in place (HF SplitDelimiterBehavior); the
 * surviving spans get match = false, removed ones are dropped. */
static void apply_behavior(enc *e, mnv__split_behavior bh) {
    size_t m = 0;
    bool prev_match = false;
    if (bh == MNV__SPLIT_MERGED_NEXT) {
        /* walk backwards, merging a match into the span after it */
        span *v = e->sp;
        size_t n = e->nsp, w = n; /* output grows down from the end */
        for (size_t k = n; k-- > 0;) {
            span x = v[k];
            if (x.match && !prev_match && w < n) v[w].beg = x.beg;
            else v[--w] = (span){x.beg, x.end, false};
            prev_match = x.match;
        }
        memmove(v, v + w, (n - w) * sizeof *v);
        e->nsp = n - w;
        return;
    }
    for (size_t k = 0; k < e->nsp; k++) {
        span x = e->sp[k];
        bool merge = false;
        switch (bh) {
        case MNV__SPLIT_REMOVED:
            if (x.match) continue;
            break;
        case MNV__SPLIT_ISOLATED: break;
        case MNV__SPLIT_MERGED_PREV: merge = x.match && !prev_match && m > 0; break;
        case MNV__SPLIT_CONTIGUOUS: merge = x.match == prev_match && m > 0; break;
        default: break;
        }
        prev_match = x.match;
        if (merge) e->sp[m - 1].end = x.end;
        else e->sp[m++] = (span){x.beg, x.end, false};
    }
    e->nsp = m;
}

/* ---- pre-tokenizers ------------------------------------------------------------------ */

static void split_piece(enc *e, const mnv__pretok *p, const pcre2_code *re, const char *s,
                        size_t n, bool first, mnv__plist *out) {
    find_spans(e, re, p->lit, p->lit_len, s, n);
    if (p->invert)
        for (size_t k = 0; k < e->nsp; k++) e->sp[k].match = !e->sp[k].match;
    apply_behavior(e, p->behavior);
    for (size_t k = 0; k < e->nsp; k++)
        mnv__plist_add(out, s + e->sp[k].beg, e->sp[k].end - e->sp[k].beg,
                       first && e->sp[k].beg == 0);
}

static void bytelevel_map(const char *s, size_t n, bool first, mnv__buf *tmp, mnv__plist *out) {
    tmp->len = 0;
    for (size_t i = 0; i < n; i++) mnv__buf_put_cp(tmp, mnv__bytelevel_cp((uint8_t)s[i]));
    mnv__plist_add(out, tmp->p, tmp->len, first);
}

static void bytelevel_piece(enc *e, const mnv__pretok *p, const char *s, size_t n, bool first,
                            mnv__plist *out) {
    mnv__buf src = {0};
    if (p->add_prefix_space && (n == 0 || s[0] != ' ')) {
        mnv__buf_putc(&src, ' ');
        mnv__buf_put(&src, s, n);
        if (src.oom) e->oom = true;
        s = src.p ? src.p : "";
        n = src.len;
    }
    if (p->use_regex) {
        find_spans(e, e->t->gpt2_re, NULL, 0, s, n); /* Isolated: every span is a piece */
        for (size_t k = 0; k < e->nsp; k++)
            bytelevel_map(s + e->sp[k].beg, e->sp[k].end - e->sp[k].beg,
                          first && e->sp[k].beg == 0, &e->tmp, out);
    } else {
        bytelevel_map(s, n, first, &e->tmp, out);
    }
    mnv__buf_free(&src);
}

static void metaspace_piece(enc *e, const mnv__pretok *p, const char *s, size_t n, bool first,
                            mnv__plist *out) {
    mnv__buf *b = &e->tmp;
    b->len = 0;
    /* spaces become repl first, so a leading space counts as a leading repl */
    bool starts = (n > 0 && s[0] == ' ') || (n >= p->repl_len && !memcmp(s, p->repl, p->repl_len));
    if ((p->scheme == MNV__PREPEND_ALWAYS || (p->scheme == MNV__PREPEND_FIRST && first)) &&
        !starts)
        mnv__buf_put(b, p->repl, p->repl_len);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') mnv__buf_put(b, p->repl, p->repl_len);
        else mnv__buf_putc(b, s[i]);
    }
    if (b->oom) {
        e->oom = true;
        return;
    }
    if (!p->split) {
        mnv__plist_add(out, b->p, b->len, first);
        return;
    }
    /* MergedWithNext on each replacement character: a piece starts at each one. */
    size_t beg = 0;
    for (size_t i = 0; i + p->repl_len <= b->len;) {
        if (i > beg && !memcmp(b->p + i, p->repl, p->repl_len)) {
            mnv__plist_add(out, b->p + beg, i - beg, first && beg == 0);
            beg = i;
        }
        i += i < b->len ? char_len(b->p + i, b->len - i) : 1;
    }
    mnv__plist_add(out, b->p + beg, b->len - beg, first && beg == 0);
}

static const mnv__plist *pretokenize(enc *e, const char *s, size_t n, bool first) {
    const mnv_tokenizer *t = e->t;
    mnv__plist *cur = &e->pl[0];
    mnv__plist_clear(cur);
    mnv__plist_add(cur, s, n, first);
    for (int k = 0; k < t->n_pre; k++) {
        const mnv__pretok *p = &t->pre[k];
        mnv__plist *out = &e->pl[(k + 1) & 1];
        mnv__plist_clear(out);
        for (size_t i = 0; i < cur->n; i++) {
            const char *ps = mnv__plist_at(cur, i);
            size_t pn = cur->v[i].len;
            bool pf = cur->v[i].first;
            if (p->kind == MNV__PRE_SPLIT) split_piece(e, p, p->re, ps, pn, pf, out);
            else if (p->kind == MNV__PRE_BYTELEVEL) bytelevel_piece(e, p, ps, pn, pf, out);
            else metaspace_piece(e, p, ps, pn, pf, out);
        }
        if (out->oom) e->oom = true;
        cur = out;
    }
    if (cur->oom) e->oom = true;
    return cur;
}

/* ---- BPE ------------------------------------------------------------------------------ */

static bool cand_less(cand a, cand b) { return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos); }

static void heap_push(enc *e, cand c) {
    if (!grow((void **)&e->heap, &e->capheap, e->nheap + 1, sizeof *e->heap)) {
        e->oom = true;
        return;
    }
    size_t i = e->nheap++;
    while (i > 0 && cand_less(c, e->heap[(i - 1) / 2])) {
        e->heap[i] = e->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    e->heap[i] = c;
}

static cand heap_pop(enc *e) {
    cand top = e->heap[0], last = e->heap[--e->nheap];
    size_t i = 0, n = e->nheap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && cand_less(e->heap[c + 1], e->heap[c])) c++;
        if (!cand_less(e->heap[c], last)) break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n) e->heap[i] = last;
    return top;
}

static void push_pair(enc *e, int32_t pos) {
    int32_t rank, id, nx = e->syms[pos].next;
    if (nx >= 0 && mnv__merge_find(e->t, e->syms[pos].id, e->syms[nx].id, &rank, &id))
        heap_push(e, (cand){rank, pos, id});
}

/* The word's characters as initial symbols: vocab hits, else byte-fallback
 * <0xNN> tokens, else unk (consecutive unks fused when fuse_unk). */
static size_t initial_symbols(enc *e, const char *w, size_t n) {
    const mnv_tokenizer *t = e->t;
    size_t ns = 0;
    bool last_unk = false;
    if (!grow((void **)&e->syms, &e->capsyms, n, sizeof *e->syms)) {
        e->oom = true;
        return 0;
    }
    for (size_t i = 0; i < n;) {
        size_t l = char_len(w + i, n - i);
        int32_t id = mnv__vocab_find(t, w + i, l), fb[4];
        size_t nfb = 0;
        if (id < 0 && t->byte_fallback) {
            for (nfb = 0; nfb < l; nfb++) {
                char name[8];
                snprintf(name, sizeof name, "<0x%02X>", (uint8_t)w[i + nfb]);
                if ((fb[nfb] = mnv__vocab_find(t, name, 6)) < 0) break;
            }
            if (nfb < l) nfb = 0;
        }
        if (id >= 0) {
            e->syms[ns++] = (sym){id, 0, 0, (uint32_t)l};
        } else if (nfb) {
            for (size_t k = 0; k < nfb; k++) e->syms[ns++] = (sym){fb[k], 0, 0, 1};
        } else if (t->unk_id >= 0) {
            if (t->fuse_unk && last_unk) e->syms[ns - 1].len += (uint32_t)l;
            else e->syms[ns++] = (sym){t->unk_id, 0, 0, (uint32_t)l};
        }
        last_unk = id < 0 && !nfb && t->unk_id >= 0;
        i += l;
    }
    for (size_t k = 0; k < ns; k++) {
        e->syms[k].prev = (int32_t)k - 1;
        e->syms[k].next = k + 1 < ns ? (int32_t)k + 1 : -1;
    }
    return ns;
}

static void bpe_word(enc *e, const char *w, size_t n) {
    const mnv_tokenizer *t = e->t;
    if (!n) return;
    if (t->ignore_merges) {
        int32_t id = mnv__vocab_find(t, w, n);
        if (id >= 0) {
            push_id(e, id);
            return;
        }
    }
    size_t ns = initial_symbols(e, w, n);
    if (!ns) return;
    sym *s = e->syms;
    e->nheap = 0;
    for (size_t k = 0; k + 1 < ns; k++) push_pair(e, (int32_t)k);
    while (e->nheap && !e->oom) {
        cand c = heap_pop(e);
        int32_t rank, id, nx = s[c.pos].next;
        if (s[c.pos].len == 0 || nx < 0) continue;
        /* stale entry: the pair at pos changed since it was queued */
        if (!mnv__merge_find(t, s[c.pos].id, s[nx].id, &rank, &id) || id != c.id) continue;
        s[c.pos].id = id;
        s[c.pos].len += s[nx].len;
        s[c.pos].next = s[nx].next;
        if (s[nx].next >= 0) s[s[nx].next].prev = c.pos;
        s[nx].len = 0;
        if (s[c.pos].prev >= 0) push_pair(e, s[c.pos].prev);
        push_pair(e, c.pos);
    }
    for (int32_t k = 0; k >= 0; k = s[k].next) push_id(e, s[k].id);
}

/* ---- normalizers -------------------------------------------------------------------- */

static void strip_ws(const char *s, size_t n, bool left, bool right, mnv__buf *out) {
    size_t b = 0, en = n;
    uint32_t cp;
    while (left && b < en) {
        size_t l = mnv__utf8_next(s + b, en - b, &cp);
        if (!l || !mnv__is_space(cp)) break;
        b += l;
    }
    while (right && en > b) {
        size_t k = en - 1;
        while (k > b && ((uint8_t)s[k] & 0xC0) == 0x80) k--;
        if (!mnv__utf8_next(s + k, en - k, &cp) || !mnv__is_space(cp)) break;
        en = k;
    }
    mnv__buf_put(out, s + b, en - b);
}

/* Run the normalizer chain; returns the result (in nb[0] or nb[1], or s). */
static const char *normalize_chain(const mnv_tokenizer *t, const char *s, size_t *n,
                                   pcre2_match_data *md, mnv__buf nb[2], bool *oom) {
    int w = 0;
    for (int k = 0; k < t->n_norm; k++) {
        const mnv__norm *nm = &t->norm[k];
        mnv__buf *out = &nb[w];
        out->len = 0;
        switch (nm->kind) {
        case MNV__NORM_NFC:
        case MNV__NORM_NFD: mnv__normalize_nf(s, *n, nm->kind == MNV__NORM_NFC, out); break;
        case MNV__NORM_PREPEND:
            if (*n) mnv__buf_put(out, nm->rep.content, nm->rep.content_len);
            mnv__buf_put(out, s, *n);
            break;
        case MNV__NORM_REPLACE: mnv__replace_apply(&nm->rep, s, *n, md, out); break;
        case MNV__NORM_STRIP: strip_ws(s, *n, nm->left, nm->right, out); break;
        }
        if (out->oom) *oom = true;
        s = out->p ? out->p : "";
        *n = out->len;
        w ^= 1;
    }
    return s;
}

void mnv__normalize(const mnv_tokenizer *t, const char *s, size_t n, pcre2_match_data *md,
                    mnv__buf *out) {
    mnv__buf nb[2] = {{0}, {0}};
    bool oom = false;
    pcre2_match_data *own = md ? NULL : pcre2_match_data_create(16, NULL);
    const char *r = normalize_chain(t, s, &n, md ? md : own, nb, &oom);
    mnv__buf_put(out, r, n);
    if (oom) out->oom = true;
    mnv__buf_free(&nb[0]);
    mnv__buf_free(&nb[1]);
    if (own) pcre2_match_data_free(own);
}

/* ---- added tokens -------------------------------------------------------------------- */

/* Is the character at s[k..n) a word character (Rust regex \w)? */
static bool is_word_at(const mnv_tokenizer *t, const char *s, size_t k, size_t n,
                       pcre2_match_data *md) {
    uint32_t cp;
    size_t l = mnv__utf8_next(s + k, n - k, &cp);
    if (!l) return false; /* s[k..k+l) is one valid character: safe without PCRE2's check */
    return pcre2_match(t->word_re, (PCRE2_SPTR)(s + k), l, 0, PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK,
                       md, NULL) >= 0;
}

static bool word_before(const mnv_tokenizer *t, const char *s, size_t at, pcre2_match_data *md) {
    if (!at) return false;
    size_t k = at - 1;
    while (k > 0 && ((uint8_t)s[k] & 0xC0) == 0x80) k--;
    return is_word_at(t, s, k, at, md);
}

/* Next added token (set k) in s[from..n), as the span it replaces (with
 * lstrip/rstrip whitespace). lo bounds how far lstrip may reach back. */
static bool next_added(const mnv_tokenizer *t, int k, const char *s, size_t n, size_t from,
                       size_t lo, pcre2_match_data *md, size_t *ms, size_t *me, int32_t *id) {
    for (size_t pos = from; pos < n; pos++) {
        uint8_t c = (uint8_t)s[pos];
        const mnv__added *hit = NULL;
        for (uint32_t j = t->abyte[k][c]; j < t->abyte[k][c + 1]; j++) {
            const mnv__added *a = &t->added[t->amatch[k][j]];
            if (a->nlen <= n - pos && !memcmp(s + pos, t->arena + a->noff, a->nlen)) {
                hit = a;
                break;
            }
        }
        if (!hit) continue;
        size_t b = pos, en = pos + hit->nlen;
        if (hit->single_word && t->word_re &&
            (word_before(t, s, b, md) || (en < n && is_word_at(t, s, en, n, md)))) {
            pos = en - 1; /* the match is consumed but not used */
            continue;
        }
        uint32_t cp;
        while (hit->lstrip && b > lo) {
            size_t q = b - 1;
            while (q > lo && ((uint8_t)s[q] & 0xC0) == 0x80) q--;
            if (!mnv__utf8_next(s + q, b - q, &cp) || !mnv__is_space(cp)) break;
            b = q;
        }
        while (hit->rstrip && en < n) {
            size_t l = mnv__utf8_next(s + en, n - en, &cp);
            if (!l || !mnv__is_space(cp)) break;
            en += l;
        }
        *ms = b;
        *me = en;
        *id = hit->id;
        return true;
    }
    return false;
}

static void pretok_bpe(enc *e, const char *s, size_t n, bool first) {
    if (!n) return;
    const mnv__plist *l = pretokenize(e, s, n, first);
    for (size_t i = 0; i < l->n && !e->oom; i++) bpe_word(e, mnv__plist_at(l, i), l->v[i].len);
}

/* Text between raw-matched added tokens: normalize, then split off the
 * normalized added tokens, then pre-tokenize and BPE. */
static void encode_segment(enc *e, const char *s, size_t n, bool first) {
    const mnv_tokenizer *t = e->t;
    if (!n) return;
    s = normalize_chain(t, s, &n, e->md, e->nb, &e->oom);
    size_t seg = 0, ms, me;
    int32_t id;
    while (!e->ordinary && t->abyte[1][256] && next_added(t, 1, s, n, seg, seg, e->md, &ms, &me, &id)) {
        pretok_bpe(e, s + seg, ms - seg, first && seg == 0);
        push_id(e, id);
        seg = me;
    }
    pretok_bpe(e, s + seg, n - seg, first && seg == 0);
}

static void encode_text(enc *e, const char *s, size_t n) {
    size_t seg = 0, ms, me;
    int32_t id;
    while (!e->ordinary && next_added(e->t, 0, s, n, seg, seg, e->md, &ms, &me, &id)) {
        encode_segment(e, s + seg, ms - seg, seg == 0);
        push_id(e, id);
        seg = me;
    }
    encode_segment(e, s + seg, n - seg, seg == 0);
}

static mnv_status tokenize(const mnv_tokenizer *t, const char *text, size_t len, int add_bos, bool ordinary,
                           int32_t *ids, size_t cap, size_t *n_out) {
    if (n_out) *n_out = 0;
    if (!t || (!text && len) || !n_out || (!ids && cap))
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_tokenize: NULL tokenizer, text, ids or "
                             "n_out");
    enc e = {.t = t, .ordinary = ordinary};
    mnv__buf fixed = {0};
    if (!text) text = "";
    /* HF takes Unicode strings: invalid UTF-8 is read as U+FFFD, as Python's
     * bytes.decode(errors="replace") would. */
    if (!mnv__utf8_valid(text, len, NULL)) {
        mnv__utf8_lossy(text, len, &fixed);
        text = fixed.p ? fixed.p : "";
        len = fixed.len;
        e.oom = fixed.oom;
    }
    e.md = pcre2_match_data_create(16, NULL);
    if (!e.md) e.oom = true;
    if (add_bos && t->bos >= 0) push_id(&e, t->bos);
    if (!e.oom) encode_text(&e, text, len);
    mnv_status st = MNV_OK;
    if (e.oom) {
        st = mnv_set_error(MNV_ERR_NOMEM, "mnv_tokenize: out of memory on %zu bytes of text", len);
    } else {
        *n_out = e.n;
        if (e.n > cap)
            st = mnv_set_error(MNV_ERR_BUFFER_TOO_SMALL, "mnv_tokenize: %zu ids do not fit in cap "
                               "%zu", e.n, cap);
        else if (e.n)
            memcpy(ids, e.ids, e.n * sizeof *ids);
    }
    free(e.ids);
    mnv__buf_free(&e.nb[0]);
    mnv__buf_free(&e.nb[1]);
    mnv__buf_free(&e.tmp);
    mnv__buf_free(&fixed);
    mnv__plist_free(&e.pl[0]);
    mnv__plist_free(&e.pl[1]);
    free(e.sp);
    free(e.syms);
    free(e.heap);
    if (e.md) pcre2_match_data_free(e.md);
    return st;
}

mnv_status mnv_tokenize(const mnv_tokenizer *t, const char *text, size_t len, int add_bos, int32_t *ids, size_t cap,
                        size_t *n_out) {
    return tokenize(t, text, len, add_bos, false, ids, cap, n_out);
}

mnv_status mnv__tokenize_ordinary(const mnv_tokenizer *t, const char *text, size_t len, int32_t *ids, size_t cap,
                                  size_t *n_out) {
    return tokenize(t, text, len, 0, true, ids, cap, n_out);
}
