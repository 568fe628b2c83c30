/* Decoding: mnv_detokenize runs the tokenizer.json decoder chain over the
 * list of token strings exactly as Hugging Face `decode` does (ByteLevel,
 * Replace, ByteFallback, Fuse, Strip, Metaspace). The streaming decoder runs
 * the same chain one token at a time, keeps bytes of an incomplete UTF-8
 * character until it completes, and applies a Strip that follows Fuse (or
 * ByteLevel, which also fuses) to the start of the stream only.
 *
 * Streaming and whole decoding agree on every valid UTF-8 output. They
 * differ only on invalid byte sequences: a run of <0xNN> tokens that is not
 * valid UTF-8 decodes (as in HF) to one U+FFFD per byte, while the stream,
 * which has already emitted the run's complete characters, replaces each
 * maximal invalid subpart by one U+FFFD. A Strip's `stop` (trailing) count
 * after Fuse is not applied by the stream.
 *
 * The stream decodes every id it is given, special tokens included (as
 * decode with skip_special = 0); a caller that hides special tokens leaves
 * them out of the stream. */
#include <stdlib.h>

#include "tokenizer/tokenizer.h"

static mnv_status check_id(const mnv_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->n_vocab)
        return mnv_set_error(MNV_ERR_RANGE, "token id %d is out of range [0, %d)", id, t->n_vocab);
    if (!(t->id_flags[id] & MNV__ID_VALID))
        return mnv_set_error(MNV_ERR_RANGE, "token id %d has no token in the vocabulary", id);
    return MNV_OK;
}

/* Token text through ByteLevel's char -> byte map; raw bytes when a char is
 * outside the map (as HF does for e.g. added tokens containing a space). */
static void bytelevel_bytes(const char *s, size_t n, mnv__buf *out) {
    size_t mark = out->len;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = mnv__utf8_next(s + i, n - i, &cp);
        int b = l ? mnv__bytelevel_byte(cp) : -1;
        if (b < 0) {
            out->len = mark;
            mnv__buf_put(out, s, n);
            return;
        }
        mnv__buf_putc(out, (char)b);
        i += l;
    }
}

static int hexv(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* "<0xNN>" -> 0..255, else -1 */
static int byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int h = hexv(s[3]), l = hexv(s[4]);
    return h < 0 || l < 0 ? -1 : h * 16 + l;
}

/* Strip up to `start` leading and `stop` trailing copies of the content char. */
static void strip_piece(const mnv__dec *d, const char *s, size_t n, mnv__buf *out) {
    size_t b = 0, e = n, c = d->content_len;
    for (size_t k = 0; k < d->start && e - b >= c && !memcmp(s + b, d->content, c); k++) b += c;
    for (size_t k = 0; k < d->stop && e - b >= c && !memcmp(s + e - c, d->content, c); k++) e -= c;
    mnv__buf_put(out, s + b, e - b);
}

static void metaspace_piece(const mnv__dec *d, const char *s, size_t n, bool first, mnv__buf *out) {
    bool drop = first && d->scheme != MNV__PREPEND_NEVER;
    for (size_t i = 0; i < n;) {
        if (n - i >= d->repl_len && !memcmp(s + i, d->repl, d->repl_len)) {
            if (!drop) mnv__buf_putc(out, ' ');
            i += d->repl_len;
        } else {
            mnv__buf_putc(out, s[i++]);
        }
    }
}

/* ---- whole decoding ------------------------------------------------------------------- */

typedef struct {
    mnv__plist l[2];
    mnv__buf tmp, tmp2;
    pcre2_match_data *md;
} dctx;

static void flush_bytes(dctx *c, mnv__plist *out, size_t nbytes) {
    if (mnv__utf8_valid(c->tmp.p, c->tmp.len, NULL)) {
        mnv__plist_push(out, c->tmp.p ? c->tmp.p : "", c->tmp.len, false);
    } else {
        for (size_t k = 0; k < nbytes; k++) mnv__plist_push(out, "\xEF\xBF\xBD", 3, false);
    }
    c->tmp.len = 0;
}

static void run_step(dctx *c, const mnv__dec *d, const mnv__plist *in, mnv__plist *out) {
    size_t run = 0;
    c->tmp.len = 0;
    for (size_t i = 0; i < in->n; i++) {
        const char *s = mnv__plist_at(in, i);
        size_t n = in->v[i].len;
        int byte;
        switch (d->kind) {
        case MNV__DEC_BYTELEVEL: bytelevel_bytes(s, n, &c->tmp); continue;
        case MNV__DEC_FUSE: mnv__buf_put(&c->tmp, s, n); continue;
        case MNV__DEC_BYTEFALLBACK:
            if ((byte = byte_token(s, n)) >= 0) {
                mnv__buf_putc(&c->tmp, (char)byte);
                run++;
                continue;
            }
            if (run) flush_bytes(c, out, run);
            run = 0;
            mnv__plist_push(out, s, n, false);
            continue;
        default: break;
        }
        c->tmp2.len = 0;
        if (d->kind == MNV__DEC_REPLACE) mnv__replace_apply(&d->rep, s, n, c->md, &c->tmp2);
        else if (d->kind == MNV__DEC_STRIP) strip_piece(d, s, n, &c->tmp2);
        else metaspace_piece(d, s, n, i == 0, &c->tmp2);
        mnv__plist_push(out, c->tmp2.p ? c->tmp2.p : "", c->tmp2.len, false);
    }
    if (d->kind == MNV__DEC_BYTEFALLBACK && run) flush_bytes(c, out, run);
    if (d->kind == MNV__DEC_FUSE) mnv__plist_push(out, c->tmp.p ? c->tmp.p : "", c->tmp.len, false);
    if (d->kind == MNV__DEC_BYTELEVEL) {
        c->tmp2.len = 0;
        mnv__utf8_lossy(c->tmp.p, c->tmp.len, &c->tmp2);
        mnv__plist_push(out, c->tmp2.p ? c->tmp2.p : "", c->tmp2.len, false);
    }
    if (c->tmp.oom || c->tmp2.oom) out->oom = true;
}

/* Decode into out (appended). */
static mnv_status decode_all(const mnv_tokenizer *t, const int32_t *ids, size_t n, bool skip,
                             mnv__buf *out) {
    dctx c = {0};
    mnv_status st = MNV_OK;
    mnv__plist *cur = &c.l[0];
    for (size_t i = 0; i < n && st == MNV_OK; i++) {
        if ((st = check_id(t, ids[i])) != MNV_OK) break;
        if (skip && (t->id_flags[ids[i]] & MNV__ID_SPECIAL)) continue;
        mnv__plist_push(cur, t->arena + t->id_off[ids[i]], t->id_len[ids[i]], false);
    }
    c.md = st == MNV_OK ? pcre2_match_data_create(16, NULL) : NULL;
    if (st == MNV_OK && !c.md) st = mnv_set_error(MNV_ERR_NOMEM, "mnv_detokenize");
    for (int k = 0; k < t->n_dec && st == MNV_OK; k++) {
        mnv__plist *nx = &c.l[(k + 1) & 1];
        mnv__plist_clear(nx);
        run_step(&c, &t->dec[k], cur, nx);
        cur = nx;
    }
    for (size_t i = 0; i < cur->n && st == MNV_OK; i++) {
        if (!t->has_decoder && i > 0) mnv__buf_putc(out, ' '); /* HF: tokens.join(" ") */
        mnv__buf_put(out, mnv__plist_at(cur, i), cur->v[i].len);
    }
    if (st == MNV_OK && (out->oom || c.l[0].oom || c.l[1].oom))
        st = mnv_set_error(MNV_ERR_NOMEM, "mnv_detokenize: out of memory");
    mnv__plist_free(&c.l[0]);
    mnv__plist_free(&c.l[1]);
    mnv__buf_free(&c.tmp);
    mnv__buf_free(&c.tmp2);
    if (c.md) pcre2_match_data_free(c.md);
    return st;
}

/* Copy text to a caller buffer of cap bytes, NUL-terminated when it fits. */
static mnv_status copy_out(const mnv__buf *b, char *text, size_t cap, size_t *len_out,
                           const char *who) {
    if (len_out) *len_out = b->len;
    if (cap <= b->len) {
        if (text && cap) {
            memcpy(text, b->p, cap);
        }
        return mnv_set_error(MNV_ERR_BUFFER_TOO_SMALL, "%s: %zu bytes of text need a buffer of "
                             "%zu, have %zu", who, b->len, b->len + 1, cap);
    }
    if (b->len) memcpy(text, b->p, b->len);
    text[b->len] = 0;
    return MNV_OK;
}

mnv_status mnv_detokenize(const mnv_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                          char *text, size_t cap, size_t *len_out) {
    if (len_out) *len_out = 0;
    if (!t || (!ids && n) || (!text && cap) || !len_out)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_detokenize: NULL tokenizer, ids, text or "
                             "len_out");
    mnv__buf b = {0};
    mnv_status st = decode_all(t, ids, n, skip_special != 0, &b);
    if (st == MNV_OK) st = copy_out(&b, text, cap, len_out, "mnv_detokenize");
    mnv__buf_free(&b);
    return st;
}

/* ---- streaming ------------------------------------------------------------------------ */

struct mnv_detok_stream {
    const mnv_tokenizer *t;
    size_t index;        /* tokens pushed so far */
    size_t strip_left;   /* leading content chars the fused Strip may still remove */
    int strip_step;      /* index of that Strip step, -1 if none */
    mnv__utf8_dec utf;
    mnv__buf piece, tmp, out;
    pcre2_match_data *md;
};

mnv_status mnv_detok_stream_create(const mnv_tokenizer *t, mnv_detok_stream **out) {
    if (!out) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_detok_stream_create: out is NULL");
    *out = NULL;
    if (!t) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_detok_stream_create: tokenizer is NULL");
    mnv_detok_stream *s = calloc(1, sizeof *s);
    if (!s || !(s->md = pcre2_match_data_create(16, NULL))) {
        free(s);
        return mnv_set_error(MNV_ERR_NOMEM, "mnv_detok_stream_create");
    }
    s->t = t;
    s->strip_step = -1;
    bool fused = false;
    for (int k = 0; k < t->n_dec; k++) {
        const mnv__dec *d = &t->dec[k];
        if (d->kind == MNV__DEC_FUSE || d->kind == MNV__DEC_BYTELEVEL) fused = true;
        if (d->kind == MNV__DEC_STRIP && fused && s->strip_step < 0) {
            s->strip_step = k;
            s->strip_left = d->start;
        }
    }
    *out = s;
    return MNV_OK;
}

/* One token through the decoder chain, as bytes (UTF-8 assembly comes after). */
static void stream_token(mnv_detok_stream *s, const char *txt, size_t n) {
    const mnv_tokenizer *t = s->t;
    mnv__buf *p = &s->piece, *q = &s->tmp;
    p->len = 0;
    if (!t->has_decoder && s->index > 0) mnv__buf_putc(p, ' ');
    mnv__buf_put(p, txt, n);
    for (int k = 0; k < t->n_dec; k++) {
        const mnv__dec *d = &t->dec[k];
        int byte;
        const char *pp = p->p ? p->p : ""; /* NULL while the piece is empty */
        q->len = 0;
        switch (d->kind) {
        case MNV__DEC_BYTELEVEL: bytelevel_bytes(pp, p->len, q); break;
        case MNV__DEC_REPLACE: mnv__replace_apply(&d->rep, pp, p->len, s->md, q); break;
        case MNV__DEC_BYTEFALLBACK:
            if ((byte = byte_token(pp, p->len)) >= 0) mnv__buf_putc(q, (char)byte);
            else mnv__buf_put(q, pp, p->len);
            break;
        case MNV__DEC_FUSE: mnv__buf_put(q, pp, p->len); break;
        case MNV__DEC_STRIP:
            if (k == s->strip_step) {
                size_t b = 0, c = d->content_len;
                while (s->strip_left && p->len - b >= c && !memcmp(pp + b, d->content, c)) {
                    b += c;
                    s->strip_left--;
                }
                if (b < p->len) s->strip_left = 0;
                mnv__buf_put(q, pp + b, p->len - b);
            } else {
                strip_piece(d, pp, p->len, q);
            }
            break;
        case MNV__DEC_METASPACE: metaspace_piece(d, pp, p->len, s->index == 0, q); break;
        }
        mnv__buf tmp = *p; /* swap */
        *p = *q;
        *q = tmp;
    }
}

static mnv_status stream_emit(mnv_detok_stream *s, char *out, size_t cap, size_t *len_out) {
    if (s->out.oom || s->piece.oom || s->tmp.oom)
        return mnv_set_error(MNV_ERR_NOMEM, "mnv_detok_stream: out of memory");
    *len_out = s->out.len;
    if (s->out.len > cap)
        return mnv_set_error(MNV_ERR_BUFFER_TOO_SMALL, "mnv_detok_stream: %zu bytes of text do not "
                             "fit in cap %zu", s->out.len, cap);
    if (s->out.len) memcpy(out, s->out.p, s->out.len);
    return MNV_OK;
}

mnv_status mnv_detok_stream_push(mnv_detok_stream *s, int32_t id, char *out, size_t cap,
                                 size_t *len_out) {
    if (len_out) *len_out = 0;
    if (!s || !len_out || (!out && cap))
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_detok_stream_push: NULL argument");
    mnv_status st = check_id(s->t, id);
    if (st != MNV_OK) return st;
    /* Keep the state so that a too-small buffer can be retried. */
    size_t index = s->index, strip_left = s->strip_left;
    mnv__utf8_dec utf = s->utf;
    stream_token(s, s->t->arena + s->t->id_off[id], s->t->id_len[id]);
    s->index++;
    s->out.len = 0;
    mnv__utf8_dec_push(&s->utf, s->piece.p, s->piece.len, &s->out);
    st = stream_emit(s, out, cap, len_out);
    if (st != MNV_OK) {
        s->index = index;
        s->strip_left = strip_left;
        s->utf = utf;
    }
    return st;
}

mnv_status mnv_detok_stream_flush(mnv_detok_stream *s, char *out, size_t cap, size_t *len_out) {
    if (len_out) *len_out = 0;
    if (!s || !len_out || (!out && cap))
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_detok_stream_flush: NULL argument");
    mnv__utf8_dec utf = s->utf;
    s->out.len = 0;
    mnv__utf8_dec_flush(&s->utf, &s->out);
    mnv_status st = stream_emit(s, out, cap, len_out);
    if (st != MNV_OK) s->utf = utf;
    return st;
}

void mnv_detok_stream_free(mnv_detok_stream *s) {
    if (!s) return;
    mnv__buf_free(&s->piece);
    mnv__buf_free(&s->tmp);
    mnv__buf_free(&s->out);
    if (s->md) pcre2_match_data_free(s->md);
    free(s);
}
