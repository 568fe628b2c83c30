/* mnv_chat_parser: reads what a gpt-oss model generates back into Harmony
 * messages, one token (or one piece of text) at a time.
 *
 * A state machine over two kinds of input: markers (<|start|>, <|channel|>,
 * <|message|>, ...) and text. Token ids become markers when they are the
 * tokenizer's harmony ids, else text through a streaming decoder (so a
 * multi-byte character split over tokens is delivered whole); text input
 * is split at the markers' spellings.
 *
 *   EXPECT_START --<|start|>--> HEADER --<|message|>--> CONTENT --<|end|>--> EXPECT_START
 *
 * The header text (role, " to=R", "<|channel|>C", " TYPE") is parsed when
 * <|message|> arrives, with the reference's rules (openai/harmony
 * src/encoding.rs, parse_header_from_string) where the input is well
 * formed. Everything a model may get wrong is taken in without failing: see
 * mnv_chat_parser_create in minerva.h for the list. */
#include <stdlib.h>

#include "chat/harmony.h"

/* A header longer than this, or one with a newline, is content whose header
 * the model forgot. Real headers ("assistant to=functions.x<|channel|>
 * commentary <|constrain|>json") are far shorter. */
#define MAX_HEADER 256

typedef enum { ST_EXPECT_START, ST_HEADER, ST_CONTENT } pstate;

typedef struct {
    mnv_chat_role role;
    char *name, *recipient, *channel, *content_type, *content;
    size_t content_len;
    mnv_chat_end end;
} pmsg;

struct mnv_chat_parser {
    const mnv_tokenizer *tok;
    mnv_chat_tokens ids;
    mnv_detok_stream *ds;
    mnv_chat_parser_params params;
    pstate state;
    bool role_known;     /* HEADER: the role came before the header text */
    mnv_chat_role role;
    mnv__hm_buf header;  /* HEADER: the header text so far */
    bool header_nl;      /* HEADER: it holds a newline */
    pmsg cur;            /* CONTENT: the message being read (content in `content`) */
    mnv__hm_buf content;
    pmsg *msgs;
    size_t n_msgs, cap_msgs;
    int stopped;
    mnv__hm_buf held;    /* text input: a tail that may begin a marker */
    bool oom;
};

mnv_chat_parser_params mnv_chat_parser_params_default(void) {
    mnv_chat_parser_params p;
    memset(&p, 0, sizeof p);
    p.size = sizeof p;
    p.after_start = 1;
    return p;
}

static void pmsg_free(pmsg *m) {
    free(m->name);
    free(m->recipient);
    free(m->channel);
    free(m->content_type);
    free(m->content);
    memset(m, 0, sizeof *m);
}

static char *dupn(mnv_chat_parser *p, const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) {
        p->oom = true;
        return NULL;
    }
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

static bool blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!is_ws(s[i])) return false;
    return true;
}

/* ---- header parsing ------------------------------------------------------------------ */

typedef struct {
    const char *s;
    size_t n;
} span;

#define MAX_PARTS 64

typedef struct {
    mnv__hm_buf text; /* the header with the channel cut out, constrain markers spaced */
    span part[MAX_PARTS];
    int n_parts;
} hdr_work;

static bool span_is(span a, const char *s) { return a.n == strlen(s) && memcmp(a.s, s, a.n) == 0; }
static bool span_starts(span a, const char *s) { return a.n >= strlen(s) && memcmp(a.s, s, strlen(s)) == 0; }

/* Cut every "<|channel|>VALUE" out of h (VALUE ends at a blank or '<'); the
 * first non-empty VALUE is the channel. Constrain markers get a blank before
 * them so that "to=x<|constrain|>json" splits in two. */
static void hdr_prepare(mnv_chat_parser *p, const char *h, size_t n, hdr_work *w, pmsg *out) {
    const char *cm = mnv__hm_marker_str[MNV__HM_CHANNEL], *km = mnv__hm_marker_str[MNV__HM_CONSTRAIN];
    size_t cl = strlen(cm), kl = strlen(km);
    for (size_t i = 0; i < n;) {
        if (n - i >= cl && memcmp(h + i, cm, cl) == 0) {
            size_t b = i + cl, e = b;
            while (e < n && !is_ws(h[e]) && h[e] != '<') e++;
            if (e > b && !out->channel) out->channel = dupn(p, h + b, e - b);
            mnv__hm_putc(&w->text, ' ');
            i = e;
        } else if (n - i >= kl && memcmp(h + i, km, kl) == 0) {
            mnv__hm_putc(&w->text, ' ');
            mnv__hm_put(&w->text, km, kl);
            i += kl;
        } else {
            mnv__hm_putc(&w->text, h[i++]);
        }
    }
    const char *s = w->text.p ? w->text.p : "";
    size_t len = w->text.len;
    for (size_t i = 0; i < len && w->n_parts < MAX_PARTS;) {
        while (i < len && is_ws(s[i])) i++;
        size_t b = i;
        while (i < len && !is_ws(s[i])) i++;
        if (i > b) w->part[w->n_parts++] = (span){s + b, i - b};
    }
    if (w->text.oom) p->oom = true;
}

static void drop_part(hdr_work *w, int k) {
    memmove(&w->part[k], &w->part[k + 1], (size_t)(w->n_parts - k - 1) * sizeof w->part[0]);
    w->n_parts--;
}

/* The role: given, or the first word (a known role name, else a tool's name). */
static void hdr_role(mnv_chat_parser *p, hdr_work *w, bool role_known, mnv_chat_role role, pmsg *out) {
    out->role = role_known ? role : MNV_ROLE_ASSISTANT;
    if (w->n_parts == 0) return;
    span first = w->part[0];
    if (role_known) {
        if (span_is(first, mnv_chat_role_name(role))) drop_part(w, 0);
        return;
    }
    for (int r = 0; r < MNV_ROLE_COUNT; r++)
        if (span_is(first, mnv_chat_role_name((mnv_chat_role)r))) {
            out->role = (mnv_chat_role)r;
            drop_part(w, 0);
            return;
        }
    out->role = MNV_ROLE_TOOL;
    out->name = dupn(p, first.s, first.n);
    drop_part(w, 0);
}

static char *strip_to(mnv_chat_parser *p, span a) {
    if (span_starts(a, "to=")) return dupn(p, a.s + 3, a.n - 3);
    return dupn(p, a.s, a.n);
}

/* A complete header (at <|message|>): a "to=" word anywhere is the
 * recipient, a word starting with <|constrain|> the content type; of the
 * words left, the reference's rule: one word alone is a recipient, else the
 * last is the content type and the one before it the recipient. Further
 * words are ignored. */
static void hdr_full(mnv_chat_parser *p, hdr_work *w, pmsg *out) {
    const char *km = mnv__hm_marker_str[MNV__HM_CONSTRAIN];
    for (int k = 0; k < w->n_parts; k++)
        if (!out->recipient && span_starts(w->part[k], "to=") && w->part[k].n > 3) {
            out->recipient = strip_to(p, w->part[k]);
            drop_part(w, k--);
        } else if (!out->content_type && span_starts(w->part[k], km)) {
            span a = w->part[k];
            if (a.n == strlen(km) && k + 1 < w->n_parts) { /* "<|constrain|> json" */
                mnv__hm_buf t = {0};
                mnv__hm_put(&t, a.s, a.n);
                mnv__hm_put(&t, w->part[k + 1].s, w->part[k + 1].n);
                out->content_type = t.oom ? NULL : t.p;
                if (t.oom) p->oom = true;
                drop_part(w, k + 1);
            } else {
                out->content_type = dupn(p, a.s, a.n);
            }
            drop_part(w, k--);
        }
    int n = w->n_parts;
    if (n == 0) return;
    if (!out->recipient && !out->content_type) {
        if (n == 1) {
            out->recipient = strip_to(p, w->part[0]);
        } else {
            out->content_type = dupn(p, w->part[n - 1].s, w->part[n - 1].n);
            out->recipient = strip_to(p, w->part[n - 2]);
        }
    } else if (!out->content_type) {
        out->content_type = dupn(p, w->part[n - 1].s, w->part[n - 1].n);
    } else if (!out->recipient) {
        out->recipient = strip_to(p, w->part[n - 1]);
    }
}

/* A header that never reached <|message|>: a leading "to=" word and a
 * constrain word are still header; the rest, spacing kept, is content.
 * Trailing blanks are dropped only from a complete message (while
 * streaming, what follows is appended to this text). */
static void hdr_lenient(mnv_chat_parser *p, hdr_work *w, bool complete, pmsg *out, mnv__hm_buf *rest) {
    int k = 0;
    if (k < w->n_parts && span_starts(w->part[k], "to=") && w->part[k].n > 3)
        out->recipient = strip_to(p, w->part[k++]);
    if (k < w->n_parts && span_starts(w->part[k], mnv__hm_marker_str[MNV__HM_CONSTRAIN])) {
        out->content_type = dupn(p, w->part[k].s, w->part[k].n);
        k++;
    }
    if (k >= w->n_parts) return;
    const char *b = w->part[k].s, *e = w->text.p + w->text.len;
    while (complete && e > b && is_ws(e[-1])) e--;
    mnv__hm_put(rest, b, (size_t)(e - b));
}

/* Parse header text h[0..n) into p->cur (role, name, recipient, channel,
 * type). full: at <|message|>; else what is not header goes to rest, see
 * hdr_lenient. */
static void parse_header(mnv_chat_parser *p, const char *h, size_t n, bool full, bool complete,
                         mnv__hm_buf *rest) {
    hdr_work w;
    memset(&w, 0, sizeof w);
    pmsg_free(&p->cur);
    hdr_prepare(p, h ? h : "", n, &w, &p->cur);
    hdr_role(p, &w, p->role_known, p->role, &p->cur);
    if (full) hdr_full(p, &w, &p->cur);
    else hdr_lenient(p, &w, complete, &p->cur, rest);
    mnv__hm_free(&w.text);
}

/* ---- events ---------------------------------------------------------------------------- */

static bool is_tool_call(const pmsg *m) {
    return m->role == MNV_ROLE_ASSISTANT && m->recipient && strcmp(m->recipient, "all") != 0 &&
           strcmp(m->recipient, "user") != 0 && strcmp(m->recipient, "assistant") != 0;
}

static void view_of(const pmsg *m, const char *content, size_t len, mnv_chat_message *v) {
    *v = (mnv_chat_message){m->role, m->name, m->recipient, m->channel, m->content_type,
                            content ? content : "", len};
}

static void emit(mnv_chat_parser *p, mnv_chat_event_kind kind, const char *delta, size_t dlen) {
    if (!p->params.on_event) return;
    mnv_chat_message v;
    view_of(&p->cur, p->content.p, p->content.len, &v);
    mnv_chat_event ev = {kind, &v, delta, dlen, p->cur.end, is_tool_call(&p->cur)};
    p->params.on_event(p->params.user_data, &ev);
}

static void add_content(mnv_chat_parser *p, const char *s, size_t n) {
    if (!n) return;
    mnv__hm_put(&p->content, s, n);
    emit(p, MNV_CHAT_EVENT_CONTENT, s, n);
}

/* Enter CONTENT for the header now in p->cur. */
static void begin_content(mnv_chat_parser *p, const char *first, size_t n) {
    p->content.len = 0;
    if (p->content.p) p->content.p[0] = 0;
    p->state = ST_CONTENT;
    emit(p, MNV_CHAT_EVENT_HEADER, NULL, 0);
    add_content(p, first, n);
}

/* Bytes the decoder still holds (an incomplete character) as U+FFFD, to the
 * content, to dst, or (dst NULL) nowhere. */
static void flush_decoder(mnv_chat_parser *p, mnv__hm_buf *dst, bool as_content) {
    char tmp[64];
    size_t n = 0;
    if (!p->ds || mnv_detok_stream_flush(p->ds, tmp, sizeof tmp, &n) != MNV_OK || !n) return;
    if (as_content) add_content(p, tmp, n);
    else if (dst) mnv__hm_put(dst, tmp, n);
}

/* Complete the current message and store it. */
static void finish_message(mnv_chat_parser *p, mnv_chat_end end) {
    flush_decoder(p, NULL, true);
    p->cur.end = end;
    emit(p, MNV_CHAT_EVENT_MESSAGE, NULL, 0);
    pmsg m = p->cur;
    memset(&p->cur, 0, sizeof p->cur);
    m.content = dupn(p, p->content.p ? p->content.p : "", p->content.len);
    m.content_len = p->content.len;
    p->content.len = 0;
    p->state = ST_EXPECT_START;
    void *v = p->msgs;
    size_t need = p->n_msgs + 1;
    if (need > p->cap_msgs) {
        size_t cap = MNV_MAX(p->cap_msgs * 2, 8);
        if (!(v = realloc(p->msgs, cap * sizeof *p->msgs))) {
            p->oom = true;
            pmsg_free(&m);
            return;
        }
        p->msgs = v;
        p->cap_msgs = cap;
    }
    p->msgs[p->n_msgs++] = m;
}

/* A header that ends without <|message|>: its text is the content. */
static void header_as_message(mnv_chat_parser *p, mnv_chat_end end) {
    flush_decoder(p, &p->header, false);
    if (blank(p->header.p, p->header.len)) return;
    mnv__hm_buf rest = {0};
    parse_header(p, p->header.p, p->header.len, false, true, &rest);
    begin_content(p, rest.p, rest.len);
    if (rest.oom) p->oom = true;
    mnv__hm_free(&rest);
    finish_message(p, end);
}

/* While streaming: a header that holds a newline, or grew past MAX_HEADER,
 * is content whose header the model forgot. The cut is made at the last
 * blank and only once a content word follows the header words (and no
 * character that may still complete is decoded early). Called after every
 * byte that can change the outcome (see on_text), so the point where the
 * limit applies does not depend on how the text was split into pieces. */
/* The length of h[0, n) without a trailing UTF-8 sequence that is still
 * incomplete (its lead byte and the continuation bytes seen so far). */
static size_t complete_utf8_prefix(const char *h, size_t n) {
    size_t i = n, k = 0;
    while (i > 0 && k < 3 && ((unsigned char)h[i - 1] & 0xC0) == 0x80) i--, k++;
    if (i == 0) return n;
    const unsigned char lead = (unsigned char)h[i - 1];
    const size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    return need > 1 && k + 1 < need ? i - 1 : n;
}

static void maybe_headerless(mnv_chat_parser *p) {
    const char *h = p->header.p;
    size_t n = p->header.len, cut = n;
    bool force = n > MAX_HEADER;
    if (p->header.oom || (!force && !p->header_nl)) return;
    if (force) {
        cut = complete_utf8_prefix(h, n); /* a character cut in two stays whole in the content */
    } else {
        while (cut > 0 && !is_ws(h[cut - 1])) cut--;
        if (cut == 0) return;
    }
    mnv__hm_buf rest = {0};
    parse_header(p, h, cut, false, false, &rest);
    if (force || rest.len > 0) {
        mnv__hm_put(&rest, h + cut, n - cut);
        begin_content(p, rest.p, rest.len);
    }
    if (rest.oom) p->oom = true;
    mnv__hm_free(&rest);
}

static void begin_header(mnv_chat_parser *p, bool role_known, mnv_chat_role role) {
    p->state = ST_HEADER;
    p->header_nl = false;
    p->role_known = role_known;
    p->role = role;
    p->header.len = 0;
    if (p->header.p) p->header.p[0] = 0;
}

/* ---- the state machine ------------------------------------------------------------------- */

static void on_text(mnv_chat_parser *p, const char *s, size_t n) {
    if (!n) return;
    if (p->state == ST_EXPECT_START) {
        while (n && is_ws(*s)) s++, n--;
        if (!n) return; /* blanks between messages */
        begin_header(p, true, MNV_ROLE_ASSISTANT);
    }
    if (p->state == ST_CONTENT) {
        add_content(p, s, n);
        return;
    }
    /* Header text is taken one byte at a time, the outcome checked where it
     * can change: after a blank (the newline rule's cut moves only there) and
     * past MAX_HEADER. A piece's bytes after the switch to CONTENT are content. */
    size_t i = 0;
    while (i < n && p->state == ST_HEADER) {
        char c = s[i++];
        mnv__hm_putc(&p->header, c);
        if (c == '\n') p->header_nl = true;
        if (is_ws(c) || p->header.len > MAX_HEADER) maybe_headerless(p);
        if (p->header.oom) return;
    }
    if (i < n) add_content(p, s + i, n - i);
}

static void on_end_marker(mnv_chat_parser *p, mnv__hm_marker m) {
    mnv_chat_end end = m == MNV__HM_RETURN ? MNV_CHAT_END_RETURN
                       : m == MNV__HM_CALL ? MNV_CHAT_END_CALL
                                           : MNV_CHAT_END_END;
    if (m != MNV__HM_END) p->stopped = 1;
    if (p->state == ST_HEADER) header_as_message(p, end);
    else if (p->state == ST_CONTENT) finish_message(p, end);
    p->state = ST_EXPECT_START;
}

static void on_marker(mnv_chat_parser *p, mnv__hm_marker m) {
    switch (m) {
    case MNV__HM_END:
    case MNV__HM_RETURN:
    case MNV__HM_CALL: on_end_marker(p, m); return;
    case MNV__HM_START:
        if (p->state == ST_HEADER) header_as_message(p, MNV_CHAT_END_INTERRUPTED);
        else if (p->state == ST_CONTENT) finish_message(p, MNV_CHAT_END_INTERRUPTED);
        begin_header(p, false, MNV_ROLE_ASSISTANT);
        return;
    case MNV__HM_CHANNEL:
    case MNV__HM_CONSTRAIN:
        if (p->state == ST_CONTENT && m == MNV__HM_CONSTRAIN) return; /* stray: dropped */
        if (p->state == ST_CONTENT) { /* a new message of the same author began */
            mnv_chat_role r = p->cur.role == MNV_ROLE_TOOL ? MNV_ROLE_ASSISTANT : p->cur.role;
            finish_message(p, MNV_CHAT_END_INTERRUPTED);
            begin_header(p, true, r);
        } else if (p->state == ST_EXPECT_START) {
            begin_header(p, true, MNV_ROLE_ASSISTANT);
        }
        mnv__hm_puts(&p->header, mnv__hm_marker_str[m]);
        return;
    case MNV__HM_MESSAGE:
        if (p->state == ST_CONTENT) return; /* stray: dropped */
        if (p->state == ST_EXPECT_START) begin_header(p, true, MNV_ROLE_ASSISTANT);
        flush_decoder(p, &p->header, false);
        parse_header(p, p->header.p, p->header.len, true, true, NULL);
        begin_content(p, NULL, 0);
        return;
    case MNV__HM_N_MARKERS: return;
    }
}

static mnv_status check_oom(mnv_chat_parser *p) {
    if (p->oom || p->header.oom || p->content.oom || p->held.oom)
        return mnv_set_error(MNV_ERR_NOMEM, "mnv_chat_parser: out of memory");
    return MNV_OK;
}

/* ---- public API ------------------------------------------------------------------------- */

static void initial_state(mnv_chat_parser *p) {
    p->state = ST_EXPECT_START;
    if (p->params.after_start) begin_header(p, true, MNV_ROLE_ASSISTANT);
}

mnv_status mnv_chat_parser_create(const mnv_tokenizer *tok, const mnv_chat_parser_params *params,
                                  mnv_chat_parser **out) {
    if (!out) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_chat_parser_create: out is NULL");
    *out = NULL;
    mnv_chat_parser *p = calloc(1, sizeof *p);
    if (!p) return mnv_set_error(MNV_ERR_NOMEM, "mnv_chat_parser_create: out of memory");
    p->params = params ? *params : mnv_chat_parser_params_default();
    p->tok = tok;
    mnv_status st = MNV_OK;
    if (tok) {
        st = mnv_chat_tokens_lookup(tok, &p->ids);
        if (st == MNV_OK) st = mnv_detok_stream_create(tok, &p->ds);
    }
    if (st != MNV_OK) {
        mnv_chat_parser_free(p);
        return st;
    }
    initial_state(p);
    *out = p;
    return MNV_OK;
}

void mnv_chat_parser_reset(mnv_chat_parser *p) {
    if (!p) return;
    for (size_t i = 0; i < p->n_msgs; i++) pmsg_free(&p->msgs[i]);
    p->n_msgs = 0;
    pmsg_free(&p->cur);
    char junk[64];
    size_t n;
    if (p->ds) mnv_detok_stream_flush(p->ds, junk, sizeof junk, &n);
    p->header.len = p->content.len = p->held.len = 0;
    p->header.oom = p->content.oom = p->held.oom = p->oom = false;
    p->stopped = 0;
    initial_state(p);
}

void mnv_chat_parser_free(mnv_chat_parser *p) {
    if (!p) return;
    mnv_chat_parser_reset(p);
    free(p->msgs);
    mnv__hm_free(&p->header);
    mnv__hm_free(&p->content);
    mnv__hm_free(&p->held);
    mnv_detok_stream_free(p->ds);
    free(p);
}

static int marker_of(const mnv_chat_parser *p, int32_t id) {
    for (int m = 0; m < MNV__HM_N_MARKERS; m++)
        if (id == mnv__hm_marker_id(&p->ids, (mnv__hm_marker)m)) return m;
    return -1;
}

mnv_status mnv_chat_parser_push(mnv_chat_parser *p, int32_t id) {
    if (!p || !p->ds)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_chat_parser_push: %s",
                             p ? "the parser has no tokenizer (use push_text)" : "NULL parser");
    int m = marker_of(p, id);
    if (m >= 0) {
        on_marker(p, (mnv__hm_marker)m);
        return check_oom(p);
    }
    char tmp[256], *buf = tmp;
    size_t n = 0;
    mnv_status st = mnv_detok_stream_push(p->ds, id, buf, sizeof tmp, &n);
    if (st == MNV_ERR_BUFFER_TOO_SMALL) { /* a very long piece */
        if (!(buf = malloc(n))) return mnv_set_error(MNV_ERR_NOMEM, "mnv_chat_parser: out of memory");
        st = mnv_detok_stream_push(p->ds, id, buf, n, &n);
    }
    if (st == MNV_ERR_RANGE) { /* an id outside the vocabulary */
        on_text(p, "\xEF\xBF\xBD", 3);
    } else if (st == MNV_OK) {
        on_text(p, buf, n);
    }
    if (buf != tmp) free(buf);
    if (st != MNV_OK && st != MNV_ERR_RANGE) return st; /* a bad id became U+FFFD */
    return check_oom(p);
}

/* Length of the longest marker prefix that s[0..n) ends with, starting at a '<'. */
static size_t partial_marker(const char *s, size_t n) {
    size_t from = n > 12 ? n - 12 : 0;
    for (size_t i = from; i < n; i++) {
        if (s[i] != '<') continue;
        for (int m = 0; m < MNV__HM_N_MARKERS; m++) {
            const char *ms = mnv__hm_marker_str[m];
            if (strlen(ms) > n - i && memcmp(s + i, ms, n - i) == 0) return n - i;
        }
    }
    return 0;
}

static int marker_at(const char *s, size_t n) {
    for (int m = 0; m < MNV__HM_N_MARKERS; m++) {
        size_t ml = strlen(mnv__hm_marker_str[m]);
        if (ml <= n && memcmp(s, mnv__hm_marker_str[m], ml) == 0) return m;
    }
    return -1;
}

mnv_status mnv_chat_parser_push_text(mnv_chat_parser *p, const char *text, size_t len) {
    if (!p || (!text && len)) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_chat_parser_push_text: NULL argument");
    mnv__hm_put(&p->held, text, len);
    if (p->held.oom) return check_oom(p);
    char *s = p->held.p ? p->held.p : "";
    size_t n = p->held.len, keep = partial_marker(s, n), done = 0;
    for (size_t i = 0; i + keep < n;) {
        int m = s[i] == '<' ? marker_at(s + i, n - keep - i) : -1;
        if (m < 0) {
            i++;
            continue;
        }
        on_text(p, s + done, i - done);
        on_marker(p, (mnv__hm_marker)m);
        i += strlen(mnv__hm_marker_str[m]);
        done = i;
    }
    on_text(p, s + done, n - keep - done);
    memmove(s, s + n - keep, keep);
    p->held.len = keep;
    return check_oom(p);
}

mnv_status mnv_chat_parser_finish(mnv_chat_parser *p) {
    if (!p) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_chat_parser_finish: NULL parser");
    if (p->held.len) on_text(p, p->held.p, p->held.len);
    p->held.len = 0;
    if (p->state == ST_HEADER) header_as_message(p, MNV_CHAT_END_TRUNCATED);
    else if (p->state == ST_CONTENT) finish_message(p, MNV_CHAT_END_TRUNCATED);
    else flush_decoder(p, NULL, false);
    p->state = ST_EXPECT_START;
    return check_oom(p);
}

int mnv_chat_parser_stopped(const mnv_chat_parser *p) { return p ? p->stopped : 0; }

size_t mnv_chat_parser_n_messages(const mnv_chat_parser *p) { return p ? p->n_msgs : 0; }

mnv_status mnv_chat_parser_message(const mnv_chat_parser *p, size_t i, mnv_chat_message *msg,
                                   mnv_chat_end *end) {
    if (!p || !msg) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_chat_parser_message: NULL argument");
    memset(msg, 0, sizeof *msg);
    if (i >= p->n_msgs)
        return mnv_set_error(MNV_ERR_RANGE, "mnv_chat_parser_message: index %zu of %zu messages", i,
                             p->n_msgs);
    const pmsg *m = &p->msgs[i];
    view_of(m, m->content, m->content_len, msg);
    if (end) *end = m->end;
    return MNV_OK;
}
