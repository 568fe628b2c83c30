/* Jinja lexer: template text to tokens, with the whitespace rules of
 * transformers' environment: trim_blocks (the first newline after a block or
 * comment tag is removed) and lstrip_blocks (spaces and tabs from the start
 * of a line to a block or comment tag are removed), plus the per-tag '-'
 * (strip all whitespace on that side) and '+' (keep it) markers. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include "chat/jinja.h"
#include "tokenizer/tokenizer.h" /* mnv__utf8_encode */

typedef struct {
    jarena *a;
    const char *s;
    size_t n, pos;
    int line;
    jtok *t;
    size_t nt, cap;
    char *err;
    size_t errcap;
} lexer;

static bool lx_err(lexer *L, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(L->err, L->errcap, "line %d: %s", L->line, msg);
    return false;
}

static bool lx_push(lexer *L, jtok tk) {
    if (L->nt == L->cap) {
        size_t nc = L->cap ? L->cap * 2 : 256;
        jtok *nt = mnv__ja_alloc(L->a, nc * sizeof *nt);
        if (!nt) return lx_err(L, "template too large");
        if (L->nt) memcpy(nt, L->t, L->nt * sizeof *nt);
        L->t = nt;
        L->cap = nc;
    }
    L->t[L->nt++] = tk;
    return true;
}

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
static bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static int count_nl(const char *s, size_t n) {
    int k = 0;
    for (size_t i = 0; i < n; i++) k += s[i] == '\n';
    return k;
}

/* Position of the next "{{", "{%" or "{#" at or after pos (n if none). */
static size_t next_tag(const lexer *L, size_t pos) {
    for (size_t i = pos; i + 1 < L->n; i++)
        if (L->s[i] == '{' && (L->s[i + 1] == '{' || L->s[i + 1] == '%' || L->s[i + 1] == '#')) return i;
    return L->n;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A quoted string starting at L->pos (the quote), decoded with Python's
 * escapes. */
static bool lex_string(lexer *L) {
    char q = L->s[L->pos];
    size_t i = L->pos + 1;
    int line = L->line;
    char *o = mnv__ja_alloc(L->a, L->n - L->pos + 1);
    if (!o) return lx_err(L, "template too large");
    size_t k = 0;
    for (;;) {
        if (i >= L->n) return lx_err(L, "unterminated string");
        char c = L->s[i];
        if (c == q) break;
        if (c == '\n') L->line++;
        if (c != '\\' || i + 1 >= L->n) {
            o[k++] = c;
            i++;
            continue;
        }
        char e = L->s[i + 1];
        int hexn = 0;
        switch (e) {
        case 'n': o[k++] = '\n'; break;
        case 't': o[k++] = '\t'; break;
        case 'r': o[k++] = '\r'; break;
        case '0': o[k++] = '\0'; break;
        case 'a': o[k++] = '\a'; break;
        case 'b': o[k++] = '\b'; break;
        case 'f': o[k++] = '\f'; break;
        case 'v': o[k++] = '\v'; break;
        case '\\': case '\'': case '"': o[k++] = e; break;
        case '\n': L->line++; break;
        case 'x': hexn = 2; break;
        case 'u': hexn = 4; break;
        case 'U': hexn = 8; break;
        default: o[k++] = '\\'; o[k++] = e; break;
        }
        i += 2;
        if (hexn) {
            uint32_t cp = 0;
            for (int j = 0; j < hexn; j++) {
                int h = i + j < L->n ? hexval(L->s[i + j]) : -1;
                if (h < 0) return lx_err(L, "bad \\%c escape in a string", e);
                cp = cp * 16 + (uint32_t)h;
            }
            if (cp > 0x10FFFF) return lx_err(L, "bad \\%c escape in a string", e);
            k += mnv__utf8_encode(cp, o + k);
            i += (size_t)hexn;
        }
    }
    o[k] = 0;
    L->pos = i + 1;
    return lx_push(L, (jtok){.kind = JT_STRING, .line = line, .s = o, .len = k});
}

static bool lex_number(lexer *L) {
    size_t i = L->pos;
    char buf[128];
    size_t k = 0;
    bool is_float = false;
    while (i < L->n && (is_digit(L->s[i]) || (L->s[i] == '_' && i + 1 < L->n && is_digit(L->s[i + 1])))) {
        if (L->s[i] != '_' && k < sizeof buf - 1) buf[k++] = L->s[i];
        i++;
    }
    if (i + 1 < L->n && L->s[i] == '.' && is_digit(L->s[i + 1])) {
        is_float = true;
        buf[k < sizeof buf - 1 ? k++ : k] = '.';
        i++;
        while (i < L->n && (is_digit(L->s[i]) || L->s[i] == '_')) {
            if (L->s[i] != '_' && k < sizeof buf - 1) buf[k++] = L->s[i];
            i++;
        }
    }
    if (i < L->n && (L->s[i] == 'e' || L->s[i] == 'E')) {
        size_t j = i + 1;
        if (j < L->n && (L->s[j] == '+' || L->s[j] == '-')) j++;
        if (j < L->n && is_digit(L->s[j])) {
            is_float = true;
            while (i < j && k < sizeof buf - 1) buf[k++] = L->s[i++];
            while (i < L->n && is_digit(L->s[i])) {
                if (k < sizeof buf - 1) buf[k++] = L->s[i];
                i++;
            }
        }
    }
    buf[k] = 0;
    jtok tk = {.line = L->line};
    if (is_float) {
        tk.kind = JT_FLOAT;
        tk.f = strtod(buf, NULL);
    } else {
        tk.kind = JT_INT;
        errno = 0;
        unsigned long long v = strtoull(buf, NULL, 10);
        if (errno || v > INT64_MAX) return lx_err(L, "integer literal too large");
        tk.i = (int64_t)v;
    }
    L->pos = i;
    return lx_push(L, tk);
}

static const char *const OPS2[] = {"//", "**", "==", "!=", "<=", ">="};
static const char OPS1[] = "+-*/%~<>=.,:|()[]{}";

/* The tokens of one {{ ... }} or {% ... %} whose opening (and marker) ends
 * at L->pos. Stops after the closing tag, consuming what trim and '-' take. */
static bool lex_tag(lexer *L, bool block) {
    int depth = 0;
    for (;;) {
        while (L->pos < L->n && is_space(L->s[L->pos])) {
            if (L->s[L->pos] == '\n') L->line++;
            L->pos++;
        }
        if (L->pos >= L->n) return lx_err(L, "unclosed %s tag", block ? "block" : "variable");
        const char *p = L->s + L->pos;
        size_t rest = L->n - L->pos;
        char ec = block ? '%' : '}';
        if (depth == 0) {
            size_t m = 0;
            bool strip = false, keep = false;
            if (rest >= 3 && p[0] == '-' && p[1] == ec && p[2] == '}') m = 3, strip = true;
            else if (rest >= 3 && p[0] == '+' && p[1] == ec && p[2] == '}') m = 3, keep = true;
            else if (rest >= 2 && p[0] == ec && p[1] == '}') m = 2;
            if (m) {
                if (!lx_push(L, (jtok){.kind = block ? JT_BLOCK_END : JT_VAR_END, .line = L->line})) return false;
                L->pos += m;
                if (strip) {
                    while (L->pos < L->n && is_space(L->s[L->pos])) {
                        if (L->s[L->pos] == '\n') L->line++;
                        L->pos++;
                    }
                } else if (block && !keep && L->pos < L->n && L->s[L->pos] == '\n') {
                    L->line++;
                    L->pos++;
                }
                return true;
            }
        }
        char c = *p;
        if (c == '\'' || c == '"') {
            if (!lex_string(L)) return false;
            continue;
        }
        if (is_digit(c)) {
            if (!lex_number(L)) return false;
            continue;
        }
        if (is_alpha(c)) {
            size_t i = L->pos;
            while (i < L->n && (is_alpha(L->s[i]) || is_digit(L->s[i]))) i++;
            if (!lx_push(L, (jtok){.kind = JT_NAME, .line = L->line, .s = p, .len = i - L->pos})) return false;
            L->pos = i;
            continue;
        }
        size_t m = 0;
        for (size_t k = 0; k < sizeof OPS2 / sizeof OPS2[0]; k++)
            if (rest >= 2 && p[0] == OPS2[k][0] && p[1] == OPS2[k][1]) m = 2;
        if (!m && strchr(OPS1, c) && c) m = 1;
        if (!m) return lx_err(L, "unexpected character '%c'", c);
        if (m == 1 && (c == '(' || c == '[' || c == '{')) depth++;
        if (m == 1 && (c == ')' || c == ']' || c == '}')) {
            if (depth == 0) return lx_err(L, "unexpected '%c'", c);
            depth--;
        }
        if (!lx_push(L, (jtok){.kind = JT_OP, .line = L->line, .s = p, .len = m})) return false;
        L->pos += m;
    }
}

/* A comment whose opening ends at L->pos. */
static bool lex_comment(lexer *L) {
    for (size_t i = L->pos; i + 1 < L->n; i++) {
        if (L->s[i] != '#' || L->s[i + 1] != '}') continue;
        bool strip = i > L->pos && L->s[i - 1] == '-';
        bool keep = i > L->pos && L->s[i - 1] == '+';
        L->line += count_nl(L->s + L->pos, i + 2 - L->pos);
        L->pos = i + 2;
        if (strip) {
            while (L->pos < L->n && is_space(L->s[L->pos])) {
                if (L->s[L->pos] == '\n') L->line++;
                L->pos++;
            }
        } else if (!keep && L->pos < L->n && L->s[L->pos] == '\n') {
            L->line++;
            L->pos++;
        }
        return true;
    }
    return lx_err(L, "unclosed comment");
}

/* The text before a tag, cut as the tag's marker says: '-' strips all
 * whitespace, '+' keeps it, and else (lstrip_blocks) a block or comment tag
 * alone after the start of its line takes the spaces before it. */
static size_t strip_before_tag(const char *text, size_t tlen, char kind, char mark, bool line_start) {
    if (mark == '-') {
        while (tlen && is_space(text[tlen - 1])) tlen--;
    } else if (mark != '+' && kind != '{') {
        size_t lpos = tlen;
        while (lpos && text[lpos - 1] != '\n') lpos--;
        if (lpos > 0 || line_start) {
            bool ws = true;
            for (size_t i = lpos; i < tlen; i++)
                if (!is_space(text[i])) ws = false;
            if (ws) tlen = lpos;
        }
    }
    return tlen;
}

/* "{% raw %}" at L->pos (after "{%" and its marker): its text up to
 * "{% endraw %}" is one text token. Returns false (nothing consumed) when
 * the tag is not raw; true with L->err set on a missing endraw. As in Jinja,
 * no trim_blocks after "{% raw %}" itself. */
static bool lex_raw(lexer *L) {
    size_t i = L->pos;
    while (i < L->n && is_space(L->s[i])) i++;
    if (L->n - i < 3 || memcmp(L->s + i, "raw", 3) != 0) return false;
    i += 3;
    while (i < L->n && is_space(L->s[i])) i++;
    bool strip = false;
    if (i + 2 < L->n && L->s[i] == '-' && L->s[i + 1] == '%' && L->s[i + 2] == '}') {
        strip = true;
        i += 3;
    } else if (i + 1 < L->n && L->s[i] == '%' && L->s[i + 1] == '}') {
        i += 2;
    } else {
        return false;
    }
    if (strip)
        while (i < L->n && is_space(L->s[i])) i++;
    size_t start = i;
    for (; i + 1 < L->n; i++) {
        if (L->s[i] != '{' || L->s[i + 1] != '%') continue;
        size_t j = i + 2;
        char mark = j < L->n && (L->s[j] == '-' || L->s[j] == '+') ? L->s[j++] : 0;
        while (j < L->n && is_space(L->s[j])) j++;
        if (L->n - j < 6 || memcmp(L->s + j, "endraw", 6) != 0) continue;
        j += 6;
        while (j < L->n && is_space(L->s[j])) j++;
        char emark = j < L->n && (L->s[j] == '-' || L->s[j] == '+') ? L->s[j++] : 0;
        if (j + 1 >= L->n || L->s[j] != '%' || L->s[j + 1] != '}') continue;
        j += 2;
        bool line_start = start == 0 || L->s[start - 1] == '\n';
        size_t tlen = strip_before_tag(L->s + start, i - start, '%', mark, line_start);
        L->line += count_nl(L->s + L->pos, start - L->pos);
        if (tlen && !lx_push(L, (jtok){.kind = JT_TEXT, .line = L->line, .s = L->s + start, .len = tlen})) return true;
        if (emark == '-')
            while (j < L->n && is_space(L->s[j])) j++;
        else if (!emark && j < L->n && L->s[j] == '\n')
            j++;
        L->line += count_nl(L->s + start, j - start);
        L->pos = j;
        return true;
    }
    lx_err(L, "missing {%% endraw %%}");
    return true;
}

bool mnv__jinja_lex(jarena *a, const char *src, size_t len, jtok **toks, size_t *n, char *err,
                    size_t errcap) {
    lexer L = {.a = a, .n = len, .line = 1, .err = err, .errcap = errcap};
    if (errcap) err[0] = 0;
    /* as Jinja reads a source: every \r\n and \r becomes \n, and one
     * newline at the very end is dropped (keep_trailing_newline off) */
    char *copy = mnv__ja_alloc(a, len + 1);
    if (!copy) return lx_err(&L, "template too large");
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            copy[k++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else {
            copy[k++] = src[i];
        }
    }
    if (k && copy[k - 1] == '\n') k--;
    copy[k] = 0;
    L.s = copy;
    L.n = k;
    while (L.pos < L.n) {
        size_t tag = next_tag(&L, L.pos);
        const char *text = L.s + L.pos;
        size_t tlen = tag - L.pos;
        bool line_start = L.pos == 0 || L.s[L.pos - 1] == '\n';
        int text_line = L.line;
        if (tag < L.n) tlen = strip_before_tag(text, tlen, L.s[tag + 1], tag + 2 < L.n ? L.s[tag + 2] : 0, line_start);
        if (tlen && !lx_push(&L, (jtok){.kind = JT_TEXT, .line = text_line, .s = text, .len = tlen}))
            return false;
        L.line += count_nl(L.s + L.pos, tag - L.pos);
        if (tag >= L.n) break;
        char kind = L.s[tag + 1];
        L.pos = tag + 2;
        if (L.pos < L.n && (L.s[L.pos] == '-' || L.s[L.pos] == '+')) L.pos++;
        if (kind == '#') {
            if (!lex_comment(&L)) return false;
            continue;
        }
        bool block = kind == '%';
        if (block && lex_raw(&L)) {
            if (L.err[0]) return false;
            continue;
        }
        if (!lx_push(&L, (jtok){.kind = block ? JT_BLOCK_BEGIN : JT_VAR_BEGIN, .line = L.line})) return false;
        if (!lex_tag(&L, block)) return false;
    }
    if (!lx_push(&L, (jtok){.kind = JT_EOF, .line = L.line})) return false;
    *toks = L.t;
    *n = L.nt;
    return true;
}
