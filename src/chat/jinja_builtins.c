/* Jinja builtins: filters, tests, the methods of strings, dicts, lists and
 * loops, and the globals (range, namespace, dict, raise_exception,
 * strftime_now), each as Python and Jinja define them. The environment is
 * transformers' immutable sandbox: methods that modify a list or a dict
 * fail. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "chat/jinja.h"
#include "tokenizer/tokenizer.h" /* mnv__utf8_encode */

#define MAX_RANGE 100000 /* the sandbox's limit on range() */

/* ---- argument helpers ---- */
typedef struct {
    jrender *r;
    const char *fname;
    jv *args;
    int nargs;
    const char **kwn;
    jv *kwv;
    int nkw;
} jargs;

/* argument `pos` (positional index) or keyword `name`; dflt when absent */
static jv arg(const jargs *A, int pos, const char *name, jv dflt) {
    if (pos >= 0 && pos < A->nargs) return A->args[pos];
    for (int i = 0; name && i < A->nkw; i++)
        if (!strcmp(A->kwn[i], name)) return A->kwv[i];
    return dflt;
}

static const char *arg_str(const jargs *A, int pos, const char *name, const char *dflt, size_t *len) {
    jv v = arg(A, pos, name, dflt ? mnv__jv_strz(dflt) : mnv__jv_none());
    if (v.t == JV_NONE || v.t == JV_UNDEF) {
        if (len) *len = 0;
        return NULL;
    }
    if (v.t != JV_STR) mnv__jr_fail(A->r, "%s: argument '%s' must be a string, not %s", A->fname, name ? name : "?",
                                    mnv__jv_typename(v));
    if (len) *len = v.u.s.n;
    return v.u.s.p;
}

static int64_t arg_int(const jargs *A, int pos, const char *name, int64_t dflt) {
    jv v = arg(A, pos, name, mnv__jv_int(dflt));
    if (v.t == JV_INT) return v.u.i;
    if (v.t == JV_BOOL) return v.u.b;
    if (v.t == JV_NONE) return dflt;
    mnv__jr_fail(A->r, "%s: argument '%s' must be an integer, not %s", A->fname, name ? name : "?",
                 mnv__jv_typename(v));
}

static bool arg_bool(const jargs *A, int pos, const char *name, bool dflt) {
    return mnv__jv_truthy(arg(A, pos, name, mnv__jv_bool(dflt)));
}

static jv need_str(jrender *r, const char *what, jv v) {
    if (v.t != JV_STR) mnv__jr_fail(r, "%s: expected a string, got %s", what, mnv__jv_typename(v));
    return v;
}

/* ---- code points and Python whitespace ---- */
static uint32_t cp_at(const char *s, size_t n, size_t i, size_t *len) {
    unsigned char c = (unsigned char)s[i];
    size_t l = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (i + l > n) l = n - i;
    uint32_t cp = l == 1 ? c : l == 2 ? c & 0x1F : l == 3 ? c & 0x0F : c & 0x07;
    for (size_t k = 1; k < l; k++) cp = (cp << 6) | ((unsigned char)s[i + k] & 0x3F);
    *len = l;
    return cp;
}

static size_t cp_start_before(const char *s, size_t i) {
    size_t j = i - 1;
    while (j > 0 && ((unsigned char)s[j] & 0xC0) == 0x80) j--;
    return j;
}

static bool py_space(uint32_t c) {
    return (c >= 9 && c <= 13) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

static bool in_set(uint32_t c, const char *set, size_t sn) {
    for (size_t i = 0; i < sn;) {
        size_t l;
        if (cp_at(set, sn, i, &l) == c) return true;
        i += l;
    }
    return false;
}

/* strip: which 1 left, 2 right, 3 both; set NULL: whitespace */
static jv strip(jrender *r, jv s, const char *set, size_t sn, int which) {
    size_t b = 0, e = s.u.s.n;
    const char *p = s.u.s.p;
    if (which & 1)
        while (b < e) {
            size_t l;
            uint32_t c = cp_at(p, e, b, &l);
            if (set ? !in_set(c, set, sn) : !py_space(c)) break;
            b += l;
        }
    if (which & 2)
        while (e > b) {
            size_t st = cp_start_before(p, e), l;
            if (st < b) st = b;
            uint32_t c = cp_at(p, e, st, &l);
            if (set ? !in_set(c, set, sn) : !py_space(c)) break;
            e = st;
        }
    return (jv){.t = JV_STR, .u.s = {p + b, e - b}};
}

/* Case of a code point: ASCII, Latin-1, Latin Extended-A, Greek and
 * Cyrillic (Python's full tables are not carried; other letters keep their
 * case). */
static uint32_t to_upper(uint32_t c) {
    if (c >= 'a' && c <= 'z') return c - 32;
    if (c < 0x80) return c;
    if ((c >= 0xE0 && c <= 0xFE && c != 0xF7)) return c - 32;
    if (c == 0xFF) return 0x178;
    if ((c >= 0x100 && c <= 0x137) || (c >= 0x14A && c <= 0x177)) return c & ~1u;
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E)) return (c & 1) ? c : c - 1;
    if (c >= 0x3B1 && c <= 0x3C9 && c != 0x3C2) return c - 32;
    if (c == 0x3C2) return 0x3A3;
    if (c >= 0x430 && c <= 0x44F) return c - 32;
    if (c >= 0x450 && c <= 0x45F) return c - 80;
    return c;
}

static uint32_t to_lower(uint32_t c) {
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c < 0x80) return c;
    if ((c >= 0xC0 && c <= 0xDE && c != 0xD7)) return c + 32;
    if (c == 0x178) return 0xFF;
    if ((c >= 0x100 && c <= 0x137) || (c >= 0x14A && c <= 0x177)) return c | 1u;
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E)) return (c & 1) ? c + 1 : c;
    if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) return c + 32;
    if (c >= 0x410 && c <= 0x42F) return c + 32;
    if (c >= 0x400 && c <= 0x40F) return c + 80;
    return c;
}

static jv map_case(jrender *r, jv s, int mode) { /* 0 lower, 1 upper, 2 capitalize, 3 str.title, 4 Jinja title */
    /* the mappings above stay within 2-byte sequences, so the text never grows
     * by more than a byte per code point */
    char *o = mnv__ja_alloc(r->a, 2 * s.u.s.n + 1);
    size_t k = 0;
    bool start = true;
    for (size_t i = 0; i < s.u.s.n;) {
        size_t l;
        uint32_t c = cp_at(s.u.s.p, s.u.s.n, i, &l);
        bool up;
        if (mode == 0) up = false;
        else if (mode == 1) up = true;
        else if (mode == 2) up = i == 0;
        else up = start;
        uint32_t m = up ? to_upper(c) : to_lower(c);
        bool cased = to_upper(c) != c || to_lower(c) != c || (c >= 0x80 && c != 0xD7 && c != 0xF7 && !py_space(c));
        if (m == c || l > 2) memcpy(o + k, s.u.s.p + i, l), k += l; /* unchanged bytes, even if not valid UTF-8 */
        else k += mnv__utf8_encode(m, o + k);
        if (mode == 3) start = !cased; /* str.title: a word starts after any uncased character */
        else if (mode == 4)
            start = c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' || c == '-' ||
                    c == '(' || c == '{' || c == '[' || c == '<';
        i += l;
    }
    o[k] = 0;
    return (jv){.t = JV_STR, .u.s = {o, k}};
}

static jv replace(jrender *r, jv s, jv old, jv nw, int64_t count) {
    jbuf b = {0};
    size_t i = 0;
    int64_t done = 0;
    if (old.u.s.n == 0) { /* Python inserts the replacement between code points */
        size_t l;
        while (i <= s.u.s.n && (count < 0 || done < count)) {
            mnv__jb_put(r, &b, nw.u.s.p, nw.u.s.n);
            done++;
            if (i == s.u.s.n) {
                i++;
                break;
            }
            cp_at(s.u.s.p, s.u.s.n, i, &l);
            mnv__jb_put(r, &b, s.u.s.p + i, l);
            i += l;
        }
        if (i <= s.u.s.n) mnv__jb_put(r, &b, s.u.s.p + i, s.u.s.n - i);
        return mnv__jb_take(r, &b);
    }
    while (i < s.u.s.n && (count < 0 || done < count)) {
        const char *hit = memmem(s.u.s.p + i, s.u.s.n - i, old.u.s.p, old.u.s.n);
        if (!hit) break;
        size_t at = (size_t)(hit - s.u.s.p);
        mnv__jb_put(r, &b, s.u.s.p + i, at - i);
        mnv__jb_put(r, &b, nw.u.s.p, nw.u.s.n);
        i = at + old.u.s.n;
        done++;
    }
    mnv__jb_put(r, &b, s.u.s.p + i, s.u.s.n - i);
    return mnv__jb_take(r, &b);
}

static jv split(jrender *r, jv s, const char *sep, size_t sn, int64_t maxsplit) {
    jv out = mnv__jv_list(r, 0);
    const char *p = s.u.s.p;
    size_t n = s.u.s.n, i = 0;
    if (!sep) { /* runs of whitespace; no empty strings */
        for (;;) {
            size_t l;
            while (i < n && py_space(cp_at(p, n, i, &l))) i += l;
            if (i >= n) break;
            if (maxsplit >= 0 && (int64_t)out.u.l->n >= maxsplit) {
                size_t e = n;
                while (e > i) {
                    size_t st = cp_start_before(p, e);
                    if (!py_space(cp_at(p, n, st, &l))) break;
                    e = st;
                }
                mnv__jl_push(r, out.u.l, mnv__jv_str(r, p + i, e - i));
                break;
            }
            size_t st = i;
            while (i < n && !py_space(cp_at(p, n, i, &l))) i += l;
            mnv__jl_push(r, out.u.l, mnv__jv_str(r, p + st, i - st));
        }
        return out;
    }
    if (sn == 0) mnv__jr_fail(r, "split: empty separator");
    for (;;) {
        const char *hit = (maxsplit < 0 || (int64_t)out.u.l->n < maxsplit) ? memmem(p + i, n - i, sep, sn) : NULL;
        if (!hit) {
            mnv__jl_push(r, out.u.l, mnv__jv_str(r, p + i, n - i));
            return out;
        }
        size_t at = (size_t)(hit - p);
        mnv__jl_push(r, out.u.l, mnv__jv_str(r, p + i, at - i));
        i = at + sn;
    }
}

static bool affix(jrender *r, jv s, jv x, bool end) {
    if (x.t == JV_LIST) {
        for (size_t i = 0; i < x.u.l->n; i++)
            if (affix(r, s, x.u.l->v[i], end)) return true;
        return false;
    }
    need_str(r, end ? "endswith" : "startswith", x);
    if (x.u.s.n > s.u.s.n) return false;
    return memcmp(s.u.s.p + (end ? s.u.s.n - x.u.s.n : 0), x.u.s.p, x.u.s.n) == 0;
}

static size_t cp_count(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

/* str.format: {} {0} {name}, {{ and }}; format specs are not supported */
static jv str_format(jrender *r, jv s, const jargs *A) {
    jbuf b = {0};
    int autoi = 0;
    const char *p = s.u.s.p;
    size_t n = s.u.s.n;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '{' && i + 1 < n && p[i + 1] == '{') {
            mnv__jb_puts(r, &b, "{");
            i++;
        } else if (p[i] == '}' && i + 1 < n && p[i + 1] == '}') {
            mnv__jb_puts(r, &b, "}");
            i++;
        } else if (p[i] == '{') {
            const char *e = memchr(p + i, '}', n - i);
            if (!e) mnv__jr_fail(r, "format: single '{' in the format string");
            size_t fl = (size_t)(e - (p + i + 1));
            const char *field = p + i + 1;
            if (memchr(field, ':', fl) || memchr(field, '!', fl))
                mnv__jr_fail(r, "format: format specifications are not supported");
            jv v;
            if (fl == 0) v = arg(A, autoi++, NULL, mnv__jv_undef(NULL));
            else if (field[0] >= '0' && field[0] <= '9') v = arg(A, atoi(field), NULL, mnv__jv_undef(NULL));
            else {
                char name[128];
                snprintf(name, sizeof name, "%.*s", (int)fl, field);
                v = arg(A, -1, name, mnv__jv_undef(NULL));
            }
            if (v.t == JV_UNDEF) mnv__jr_fail(r, "format: no argument for field '{%.*s}'", (int)fl, field);
            jv t = mnv__jv_tostr(r, v);
            mnv__jb_put(r, &b, t.u.s.p, t.u.s.n);
            i += fl + 1;
        } else if (p[i] == '}') {
            mnv__jr_fail(r, "format: single '}' in the format string");
        } else {
            mnv__jb_put(r, &b, p + i, 1);
        }
    }
    return mnv__jb_take(r, &b);
}

/* printf-style formatting, "fmt" % args and the format filter: %s %d %i %r
 * and %% (no widths or precisions) */
jv mnv__jr_percent_format(jrender *r, jv s, jv *args, int nargs) {
    jbuf b = {0};
    int ai = 0;
    const char *p = s.u.s.p;
    for (size_t i = 0; i < s.u.s.n; i++) {
        if (p[i] != '%') {
            mnv__jb_put(r, &b, p + i, 1);
            continue;
        }
        if (++i >= s.u.s.n) mnv__jr_fail(r, "format: incomplete format");
        char c = p[i];
        if (c == '%') {
            mnv__jb_puts(r, &b, "%");
            continue;
        }
        if (ai >= nargs) mnv__jr_fail(r, "format: not enough arguments for format string");
        jv v = args[ai++];
        if (c == 's') {
            jv t = mnv__jv_tostr(r, v);
            mnv__jb_put(r, &b, t.u.s.p, t.u.s.n);
        } else if (c == 'r') {
            mnv__jv_repr(r, &b, v);
        } else if (c == 'd' || c == 'i') {
            char tmp[32];
            if (v.t == JV_FLOAT) snprintf(tmp, sizeof tmp, "%lld", (long long)v.u.f);
            else if (v.t == JV_INT || v.t == JV_BOOL) snprintf(tmp, sizeof tmp, "%lld", (long long)(v.t == JV_INT ? v.u.i : v.u.b));
            else mnv__jr_fail(r, "format: %%d needs a number, not %s", mnv__jv_typename(v));
            mnv__jb_puts(r, &b, tmp);
        } else {
            mnv__jr_fail(r, "format: unsupported conversion '%%%c'", c);
        }
    }
    if (ai < nargs) mnv__jr_fail(r, "format: not all arguments converted during string formatting");
    return mnv__jb_take(r, &b);
}

/* ---- methods ---- */
static const char *const STR_METHODS[] = {
    "strip", "lstrip", "rstrip", "split", "rsplit", "startswith", "endswith", "upper", "lower", "title",
    "capitalize", "replace", "format", "find", "rfind", "count", "join", "splitlines", "isdigit", "isalpha",
    "isalnum", "isspace", "islower", "isupper", "removeprefix", "removesuffix", "index", NULL};
static const char *const DICT_METHODS[] = {"get", "items", "keys", "values", "update", "pop", "setdefault",
                                           "clear", "popitem", "copy", NULL};
static const char *const LIST_METHODS[] = {"append", "extend", "pop", "insert", "remove", "sort", "reverse",
                                           "clear", "index", "count", "copy", NULL};

static bool in_names(const char *const *names, const char *s) {
    for (int i = 0; names[i]; i++)
        if (!strcmp(names[i], s)) return true;
    return false;
}

bool mnv__jr_has_method(jv self, const char *name) {
    switch (self.t) {
    case JV_STR: return in_names(STR_METHODS, name);
    case JV_DICT: return in_names(DICT_METHODS, name);
    case JV_LIST: return in_names(LIST_METHODS, name);
    default: return false;
    }
}

static jv items_of(jrender *r, const jdict *d) {
    jv l = mnv__jv_list(r, d->n);
    for (size_t i = 0; i < d->n; i++) {
        jv t = mnv__jv_list(r, 2);
        t.tuple = 1;
        mnv__jl_push(r, t.u.l, d->k[i]);
        mnv__jl_push(r, t.u.l, d->v[i]);
        mnv__jl_push(r, l.u.l, t);
    }
    return l;
}

static bool str_class(jv s, int cls) {
    if (!s.u.s.n) return false;
    bool any_cased = false;
    for (size_t i = 0; i < s.u.s.n; i++) {
        unsigned char c = (unsigned char)s.u.s.p[i];
        bool dig = c >= '0' && c <= '9', lo = c >= 'a' && c <= 'z', up = c >= 'A' && c <= 'Z';
        switch (cls) {
        case 0: if (!dig) return false; break;
        case 1: if (!lo && !up) return false; break;
        case 2: if (!lo && !up && !dig) return false; break;
        case 3: if (!py_space(c)) return false; break;
        case 4: if (up) return false; any_cased |= lo; break;
        default: if (lo) return false; any_cased |= up; break;
        }
    }
    return cls < 4 || any_cased;
}

static jv str_method(jrender *r, jv s, const char *m, const jargs *A) {
    size_t sn;
    if (!strcmp(m, "strip") || !strcmp(m, "lstrip") || !strcmp(m, "rstrip")) {
        const char *set = arg_str(A, 0, "chars", NULL, &sn);
        return strip(r, s, set, sn, m[0] == 'l' ? 1 : m[0] == 'r' ? 2 : 3);
    }
    if (!strcmp(m, "split") || !strcmp(m, "rsplit")) {
        const char *sep = arg_str(A, 0, "sep", NULL, &sn);
        int64_t maxs = arg_int(A, 1, "maxsplit", -1);
        if (m[0] == 'r' && maxs >= 0) mnv__jr_fail(r, "rsplit with maxsplit is not supported");
        return split(r, s, sep, sn, maxs);
    }
    if (!strcmp(m, "startswith") || !strcmp(m, "endswith"))
        return mnv__jv_bool(affix(r, s, arg(A, 0, "prefix", mnv__jv_undef(NULL)), m[0] == 'e'));
    if (!strcmp(m, "upper")) return map_case(r, s, 1);
    if (!strcmp(m, "lower")) return map_case(r, s, 0);
    if (!strcmp(m, "capitalize")) return map_case(r, s, 2);
    if (!strcmp(m, "title")) return map_case(r, s, 3);
    if (!strcmp(m, "replace")) {
        jv o = need_str(r, "replace", arg(A, 0, "old", mnv__jv_none()));
        jv n = need_str(r, "replace", arg(A, 1, "new", mnv__jv_none()));
        return replace(r, s, o, n, arg_int(A, 2, "count", -1));
    }
    if (!strcmp(m, "format")) return str_format(r, s, A);
    if (!strcmp(m, "find") || !strcmp(m, "rfind") || !strcmp(m, "index") || !strcmp(m, "count")) {
        jv x = need_str(r, m, arg(A, 0, "sub", mnv__jv_none()));
        int64_t found = -1, count = 0;
        for (size_t i = 0; i + x.u.s.n <= s.u.s.n; i++)
            if (memcmp(s.u.s.p + i, x.u.s.p, x.u.s.n) == 0) {
                if (found < 0 || m[0] == 'r') found = (int64_t)cp_count(s.u.s.p, i);
                count++;
                if (!strcmp(m, "count") && x.u.s.n) i += x.u.s.n - 1;
            }
        if (!strcmp(m, "count")) return mnv__jv_int(x.u.s.n ? count : (int64_t)cp_count(s.u.s.p, s.u.s.n) + 1);
        if (!strcmp(m, "index") && found < 0) mnv__jr_fail(r, "substring not found");
        return mnv__jv_int(found);
    }
    if (!strcmp(m, "join")) {
        jlist *l = mnv__jr_iter(r, arg(A, 0, "iterable", mnv__jv_none()));
        jbuf b = {0};
        for (size_t i = 0; i < l->n; i++) {
            if (i) mnv__jb_put(r, &b, s.u.s.p, s.u.s.n);
            jv x = need_str(r, "join", l->v[i]);
            mnv__jb_put(r, &b, x.u.s.p, x.u.s.n);
        }
        return mnv__jb_take(r, &b);
    }
    if (!strcmp(m, "splitlines")) {
        jv out = mnv__jv_list(r, 0);
        size_t st = 0, i = 0;
        while (i < s.u.s.n) {
            char c = s.u.s.p[i];
            if (c == '\n' || c == '\r' || c == '\v' || c == '\f' || (c >= 0x1c && c <= 0x1e)) {
                mnv__jl_push(r, out.u.l, mnv__jv_str(r, s.u.s.p + st, i - st));
                i += (c == '\r' && i + 1 < s.u.s.n && s.u.s.p[i + 1] == '\n') ? 2 : 1;
                st = i;
            } else i++;
        }
        if (st < s.u.s.n) mnv__jl_push(r, out.u.l, mnv__jv_str(r, s.u.s.p + st, s.u.s.n - st));
        return out;
    }
    if (!strcmp(m, "isdigit")) return mnv__jv_bool(str_class(s, 0));
    if (!strcmp(m, "isalpha")) return mnv__jv_bool(str_class(s, 1));
    if (!strcmp(m, "isalnum")) return mnv__jv_bool(str_class(s, 2));
    if (!strcmp(m, "isspace")) return mnv__jv_bool(str_class(s, 3));
    if (!strcmp(m, "islower")) return mnv__jv_bool(str_class(s, 4));
    if (!strcmp(m, "isupper")) return mnv__jv_bool(str_class(s, 5));
    if (!strcmp(m, "removeprefix") || !strcmp(m, "removesuffix")) {
        jv x = need_str(r, m, arg(A, 0, NULL, mnv__jv_none()));
        bool end = m[6] == 's';
        if (!affix(r, s, x, end)) return s;
        return (jv){.t = JV_STR, .u.s = {s.u.s.p + (end ? 0 : x.u.s.n), s.u.s.n - x.u.s.n}};
    }
    mnv__jr_fail(r, "'str' object has no method '%s'", m);
}

jv mnv__jr_method(jrender *r, jv self, const char *name, jv *args, int nargs, const char **kwn, jv *kwv,
                  int nkw) {
    jargs A = {r, name, args, nargs, kwn, kwv, nkw};
    if (self.t == JV_STR) return str_method(r, self, name, &A);
    if (self.t == JV_LOOP) { /* loop.cycle(a, b, ...) */
        if (!nargs) mnv__jr_fail(r, "loop.cycle: no items");
        return args[self.u.loop->i % (size_t)nargs];
    }
    if (self.t == JV_DICT) {
        const jdict *d = self.u.d;
        if (!strcmp(name, "get")) {
            jv out;
            if (mnv__jd_get(d, arg(&A, 0, "key", mnv__jv_none()), &out)) return out;
            return arg(&A, 1, "default", mnv__jv_none());
        }
        if (!strcmp(name, "items")) return items_of(r, d);
        if (!strcmp(name, "keys") || !strcmp(name, "values")) {
            jv l = mnv__jv_list(r, d->n);
            for (size_t i = 0; i < d->n; i++) mnv__jl_push(r, l.u.l, name[0] == 'k' ? d->k[i] : d->v[i]);
            return l;
        }
        if (!strcmp(name, "copy")) {
            jv c = mnv__jv_dict(r, d->n);
            for (size_t i = 0; i < d->n; i++) mnv__jd_set(r, c.u.d, d->k[i], d->v[i]);
            return c;
        }
    }
    if (self.t == JV_LIST) {
        const jlist *l = self.u.l;
        if (!strcmp(name, "index") || !strcmp(name, "count")) {
            jv x = arg(&A, 0, NULL, mnv__jv_undef(NULL));
            int64_t count = 0;
            for (size_t i = 0; i < l->n; i++)
                if (mnv__jv_eq(l->v[i], x)) {
                    if (name[0] == 'i') return mnv__jv_int((int64_t)i);
                    count++;
                }
            if (name[0] == 'i') mnv__jr_fail(r, "list.index(x): x not in list");
            return mnv__jv_int(count);
        }
        if (!strcmp(name, "copy")) {
            jv c = mnv__jv_list(r, l->n);
            for (size_t i = 0; i < l->n; i++) mnv__jl_push(r, c.u.l, l->v[i]);
            return c;
        }
    }
    mnv__jr_fail(r, "access to attribute '%s' of '%s' object is unsafe", name, mnv__jv_typename(self));
}

/* ---- globals ---- */
static const char *const GLOBALS[] = {"range", "namespace", "dict", "raise_exception", "strftime_now", NULL};

bool mnv__jr_is_global(const char *name) { return in_names(GLOBALS, name); }

jv mnv__jr_global(jrender *r, const char *name, jv *args, int nargs, const char **kwn, jv *kwv, int nkw) {
    jargs A = {r, name, args, nargs, kwn, kwv, nkw};
    if (!strcmp(name, "range")) {
        int64_t start = 0, stop, stp = 1;
        if (nargs == 1) stop = arg_int(&A, 0, NULL, 0);
        else if (nargs == 2 || nargs == 3) {
            start = arg_int(&A, 0, NULL, 0);
            stop = arg_int(&A, 1, NULL, 0);
            if (nargs == 3) stp = arg_int(&A, 2, NULL, 1);
        } else mnv__jr_fail(r, "range expects 1 to 3 arguments, got %d", nargs);
        if (stp == 0) mnv__jr_fail(r, "range() arg 3 must not be zero");
        double count = ceil(((double)stop - (double)start) / (double)stp);
        if (count > MAX_RANGE) mnv__jr_fail(r, "range too big: %.0f items (at most %d)", count, MAX_RANGE);
        jv l = mnv__jv_list(r, count > 0 ? (size_t)count : 0);
        for (int64_t i = start; stp > 0 ? i < stop : i > stop; i += stp) mnv__jl_push(r, l.u.l, mnv__jv_int(i));
        return l;
    }
    if (!strcmp(name, "namespace") || !strcmp(name, "dict")) {
        jv d = mnv__jv_dict(r, 0);
        if (nargs > 1) mnv__jr_fail(r, "%s expects at most one positional argument", name);
        if (nargs == 1) {
            if (args[0].t != JV_DICT && args[0].t != JV_NS) mnv__jr_fail(r, "%s: the argument must be a mapping", name);
            for (size_t i = 0; i < args[0].u.d->n; i++) mnv__jd_set(r, d.u.d, args[0].u.d->k[i], args[0].u.d->v[i]);
        }
        for (int i = 0; i < nkw; i++) mnv__jd_set(r, d.u.d, mnv__jv_strz(kwn[i]), kwv[i]);
        if (name[0] == 'n') d.t = JV_NS;
        return d;
    }
    if (!strcmp(name, "raise_exception")) {
        jv m = nargs ? mnv__jv_tostr(r, args[0]) : mnv__jv_strz("");
        mnv__jr_fail(r, "%.*s", (int)MNV_MIN(m.u.s.n, 300), m.u.s.p);
    }
    if (!strcmp(name, "strftime_now")) {
        size_t fl;
        const char *fmt = arg_str(&A, 0, "format", NULL, &fl);
        if (!fmt) mnv__jr_fail(r, "strftime_now: a format is needed");
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        char out[256];
        size_t k = strftime(out, sizeof out, fmt, &tm);
        return mnv__jv_str(r, out, k);
    }
    mnv__jr_fail(r, "'%s' is not callable", name);
}

/* ---- tests ---- */
bool mnv__jr_test(jrender *r, jframe *f, const char *name, jv v, jv *args, int nargs) {
    jv a0 = nargs ? args[0] : mnv__jv_undef(NULL);
    bool num = v.t == JV_INT || v.t == JV_FLOAT || v.t == JV_BOOL;
    (void)f;
    if (!strcmp(name, "defined")) return v.t != JV_UNDEF;
    if (!strcmp(name, "undefined")) return v.t == JV_UNDEF;
    if (!strcmp(name, "none")) return v.t == JV_NONE;
    if (!strcmp(name, "boolean")) return v.t == JV_BOOL;
    if (!strcmp(name, "false")) return v.t == JV_BOOL && !v.u.b;
    if (!strcmp(name, "true")) return v.t == JV_BOOL && v.u.b;
    if (!strcmp(name, "integer")) return v.t == JV_INT;
    if (!strcmp(name, "float")) return v.t == JV_FLOAT;
    if (!strcmp(name, "number")) return num;
    if (!strcmp(name, "string")) return v.t == JV_STR;
    if (!strcmp(name, "mapping")) return v.t == JV_DICT;
    if (!strcmp(name, "iterable")) return v.t == JV_STR || v.t == JV_LIST || v.t == JV_DICT || v.t == JV_UNDEF;
    if (!strcmp(name, "sequence")) return v.t == JV_STR || v.t == JV_LIST || v.t == JV_DICT;
    if (!strcmp(name, "callable")) return v.t == JV_FUNC;
    if (!strcmp(name, "escaped")) return false;
    if (!strcmp(name, "sameas")) {
        if (v.t != a0.t) return false;
        if (v.t == JV_NONE || v.t == JV_UNDEF) return true;
        if (v.t == JV_BOOL) return v.u.b == a0.u.b;
        if (v.t == JV_INT) return v.u.i == a0.u.i && v.u.i >= -5 && v.u.i <= 256;
        return mnv__jv_eq(v, a0) && (v.t == JV_LIST ? v.u.l == a0.u.l : v.t == JV_DICT ? v.u.d == a0.u.d : false);
    }
    if (!strcmp(name, "lower") || !strcmp(name, "upper")) /* str(value).islower() */
        return str_class(mnv__jv_tostr(r, v), name[0] == 'l' ? 4 : 5);
    if (!strcmp(name, "even") || !strcmp(name, "odd") || !strcmp(name, "divisibleby")) {
        if (v.t != JV_INT && v.t != JV_BOOL) mnv__jr_fail(r, "test '%s' needs an integer", name);
        int64_t x = v.t == JV_INT ? v.u.i : v.u.b;
        if (name[0] == 'e') return x % 2 == 0;
        if (name[0] == 'o') return x % 2 != 0;
        if (a0.t != JV_INT || a0.u.i == 0) mnv__jr_fail(r, "divisibleby needs a non-zero integer");
        return x % a0.u.i == 0;
    }
    if (!strcmp(name, "eq") || !strcmp(name, "equalto") || !strcmp(name, "==")) return mnv__jv_eq(v, a0);
    if (!strcmp(name, "ne") || !strcmp(name, "!=")) return !mnv__jv_eq(v, a0);
    if (!strcmp(name, "lt") || !strcmp(name, "lessthan") || !strcmp(name, "<")) return mnv__jv_cmp(r, v, a0) < 0;
    if (!strcmp(name, "le") || !strcmp(name, "<=")) return mnv__jv_cmp(r, v, a0) <= 0;
    if (!strcmp(name, "gt") || !strcmp(name, "greaterthan") || !strcmp(name, ">")) return mnv__jv_cmp(r, v, a0) > 0;
    if (!strcmp(name, "ge") || !strcmp(name, ">=")) return mnv__jv_cmp(r, v, a0) >= 0;
    if (!strcmp(name, "in")) {
        if (a0.t == JV_STR && v.t == JV_STR)
            return !v.u.s.n || memmem(a0.u.s.p, a0.u.s.n, v.u.s.p, v.u.s.n) != NULL;
        jlist *l = mnv__jr_iter(r, a0);
        for (size_t i = 0; i < l->n; i++)
            if (mnv__jv_eq(l->v[i], v)) return true;
        return false;
    }
    mnv__jr_fail(r, "no test named '%s'", name);
}

/* ---- sorting (stable merge sort on precomputed keys) ---- */
static void merge_sort(jrender *r, jv *keys, size_t *idx, size_t *tmp, size_t n, bool rev) {
    if (n < 2) return;
    size_t h = n / 2;
    merge_sort(r, keys, idx, tmp, h, rev);
    merge_sort(r, keys, idx + h, tmp, n - h, rev);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) {
        int c = mnv__jv_cmp(r, keys[idx[j]], keys[idx[i]]);
        if (rev ? c > 0 : c < 0) tmp[k++] = idx[j++];
        else tmp[k++] = idx[i++];
    }
    while (i < h) tmp[k++] = idx[i++];
    while (j < n) tmp[k++] = idx[j++];
    memcpy(idx, tmp, n * sizeof *idx);
}

/* item.attr or item['attr'], dotted paths and integer parts allowed */
static jv attr_path(jrender *r, jv item, const char *path) {
    const char *p = path;
    while (*p) {
        const char *dot = strchr(p, '.');
        size_t l = dot ? (size_t)(dot - p) : strlen(p);
        bool digits = l > 0;
        for (size_t i = 0; i < l; i++)
            if (p[i] < '0' || p[i] > '9') digits = false;
        if (item.t == JV_UNDEF) return item;
        jv key = digits ? mnv__jv_int(atoll(p)) : mnv__jv_str(r, p, l);
        item = mnv__jr_getitem(r, item, key);
        p += l + (dot ? 1 : 0);
        if (!dot) break;
    }
    return item;
}

static jv sort_key(jrender *r, jv v, bool case_sensitive) {
    if (!case_sensitive && v.t == JV_STR) return map_case(r, v, 0);
    return v;
}

/* mode 0: items whole, 1: a pair's key, 2: a pair's value */
static jv sorted(jrender *r, jlist *l, const char *attr, bool cs, bool rev, int mode) {
    size_t n = l->n;
    jv *keys = mnv__ja_alloc(r->a, (n + 1) * sizeof *keys);
    size_t *idx = mnv__ja_alloc(r->a, (n + 1) * sizeof *idx), *tmp = mnv__ja_alloc(r->a, (n + 1) * sizeof *tmp);
    for (size_t i = 0; i < n; i++) {
        jv k = l->v[i];
        if (attr) k = attr_path(r, k, attr);
        if (mode && k.t == JV_LIST && k.u.l->n == 2) k = k.u.l->v[mode - 1];
        keys[i] = sort_key(r, k, cs);
        idx[i] = i;
    }
    merge_sort(r, keys, idx, tmp, n, rev);
    jv out = mnv__jv_list(r, n);
    for (size_t i = 0; i < n; i++) mnv__jl_push(r, out.u.l, l->v[idx[i]]);
    return out;
}

/* ---- filters ---- */
static jv f_tojson(jrender *r, jv in, const jargs *A) {
    bool ascii = arg_bool(A, 0, "ensure_ascii", false);
    jv ind = arg(A, 1, "indent", mnv__jv_none());
    const char *indent = NULL;
    if (ind.t == JV_INT) {
        int64_t w = ind.u.i < 0 ? 0 : ind.u.i > 64 ? 64 : ind.u.i;
        char *sp = mnv__ja_alloc(r->a, (size_t)w + 1);
        memset(sp, ' ', (size_t)w);
        sp[w] = 0;
        indent = sp;
    } else if (ind.t == JV_STR) {
        indent = mnv__jv_str(r, ind.u.s.p, ind.u.s.n).u.s.p;
    } else if (ind.t != JV_NONE) {
        mnv__jr_fail(r, "tojson: indent must be an integer or a string");
    }
    jv seps = arg(A, 2, "separators", mnv__jv_none());
    bool sortk = arg_bool(A, 3, "sort_keys", false);
    jbuf b = {0};
    mnv__jv_tojson(r, &b, in, indent, sortk, 0);
    jv s = mnv__jb_take(r, &b);
    if (seps.t == JV_LIST) {
        if (seps.u.l->n != 2 || seps.u.l->v[0].t != JV_STR || seps.u.l->v[1].t != JV_STR)
            mnv__jr_fail(r, "tojson: separators must be two strings");
        /* re-render with custom separators: only the default pair is built in,
         * so replace them outside of strings */
        jbuf o = {0};
        bool instr = false;
        const char *p = s.u.s.p;
        jv is = seps.u.l->v[0], ks = seps.u.l->v[1];
        for (size_t i = 0; i < s.u.s.n; i++) {
            if (instr) {
                mnv__jb_put(r, &o, p + i, 1);
                if (p[i] == '\\' && i + 1 < s.u.s.n) mnv__jb_put(r, &o, p + ++i, 1);
                else if (p[i] == '"') instr = false;
                continue;
            }
            if (p[i] == '"') instr = true;
            if (p[i] == ',' ) {
                mnv__jb_put(r, &o, is.u.s.p, is.u.s.n);
                if (!indent && i + 1 < s.u.s.n && p[i + 1] == ' ') i++;
            } else if (p[i] == ':') {
                mnv__jb_put(r, &o, ks.u.s.p, ks.u.s.n);
                if (i + 1 < s.u.s.n && p[i + 1] == ' ') i++;
            } else mnv__jb_put(r, &o, p + i, 1);
        }
        s = mnv__jb_take(r, &o);
    }
    if (ascii) {
        jbuf o = {0};
        for (size_t i = 0; i < s.u.s.n;) {
            size_t l;
            uint32_t c = cp_at(s.u.s.p, s.u.s.n, i, &l);
            char tmp[16];
            if (c < 0x80) mnv__jb_put(r, &o, s.u.s.p + i, 1);
            else if (c < 0x10000) {
                snprintf(tmp, sizeof tmp, "\\u%04x", c);
                mnv__jb_puts(r, &o, tmp);
            } else {
                c -= 0x10000;
                snprintf(tmp, sizeof tmp, "\\u%04x\\u%04x", 0xD800 + (c >> 10), 0xDC00 + (c & 0x3FF));
                mnv__jb_puts(r, &o, tmp);
            }
            i += l;
        }
        s = mnv__jb_take(r, &o);
    }
    return s;
}

static jv f_indent(jrender *r, jv s, const jargs *A) {
    jv w = arg(A, 0, "width", mnv__jv_int(4));
    jv ind;
    if (w.t == JV_STR) ind = w;
    else {
        int64_t n = w.t == JV_INT ? w.u.i : 4;
        if (n < 0) n = 0;
        if (n > 1024) mnv__jr_fail(r, "indent: width too large");
        char *sp = mnv__ja_alloc(r->a, (size_t)n + 1);
        memset(sp, ' ', (size_t)n);
        ind = (jv){.t = JV_STR, .u.s = {sp, (size_t)n}};
    }
    bool first = arg_bool(A, 1, "first", false), blank = arg_bool(A, 2, "blank", false);
    jargs none = {r, "splitlines", NULL, 0, NULL, NULL, 0};
    jbuf t = {0};
    mnv__jb_put(r, &t, s.u.s.p, s.u.s.n);
    mnv__jb_puts(r, &t, "\n");
    jv lines = str_method(r, mnv__jb_take(r, &t), "splitlines", &none);
    jbuf b = {0};
    if (first) mnv__jb_put(r, &b, ind.u.s.p, ind.u.s.n);
    for (size_t i = 0; i < lines.u.l->n; i++) {
        jv ln = lines.u.l->v[i];
        if (i) {
            mnv__jb_puts(r, &b, "\n");
            if (blank || ln.u.s.n) mnv__jb_put(r, &b, ind.u.s.p, ind.u.s.n);
        }
        mnv__jb_put(r, &b, ln.u.s.p, ln.u.s.n);
    }
    return mnv__jb_take(r, &b);
}

static jv f_round(jrender *r, jv v, const jargs *A) {
    if (v.t != JV_INT && v.t != JV_FLOAT && v.t != JV_BOOL) mnv__jr_fail(r, "round: expected a number");
    double x = v.t == JV_FLOAT ? v.u.f : v.t == JV_INT ? (double)v.u.i : v.u.b;
    int64_t prec = arg_int(A, 0, "precision", 0);
    size_t ml;
    const char *method = arg_str(A, 1, "method", "common", &ml);
    if (prec < 0 || prec > 15) mnv__jr_fail(r, "round: precision must be 0..15");
    double scale = pow(10.0, (double)prec);
    if (!strcmp(method, "common") && v.t != JV_FLOAT) return mnv__jv_int(v.t == JV_INT ? v.u.i : v.u.b);
    if (!strcmp(method, "floor")) return mnv__jv_float(floor(x * scale) / scale);
    if (!strcmp(method, "ceil")) return mnv__jv_float(ceil(x * scale) / scale);
    if (strcmp(method, "common")) mnv__jr_fail(r, "round: method must be common, floor or ceil");
    char tmp[400];
    snprintf(tmp, sizeof tmp, "%.*f", (int)prec, x);
    return mnv__jv_float(strtod(tmp, NULL));
}

static jv f_int(jrender *r, jv v, const jargs *A) {
    jv dflt = arg(A, 0, "default", mnv__jv_int(0));
    if (v.t == JV_INT) return v;
    if (v.t == JV_BOOL) return mnv__jv_int(v.u.b);
    if (v.t == JV_FLOAT) {
        if (!(fabs(v.u.f) < 9.2e18)) return dflt;
        return mnv__jv_int((int64_t)v.u.f);
    }
    if (v.t == JV_STR) {
        jv t = strip(r, v, NULL, 0, 3);
        char buf[64];
        if (t.u.s.n == 0 || t.u.s.n >= sizeof buf) return dflt;
        memcpy(buf, t.u.s.p, t.u.s.n);
        buf[t.u.s.n] = 0;
        char *end;
        errno = 0;
        long long i = strtoll(buf, &end, (int)arg_int(A, 1, "base", 10));
        if (!*end && !errno) return mnv__jv_int(i);
        double d = strtod(buf, &end);
        if (!*end && fabs(d) < 9.2e18) return mnv__jv_int((int64_t)d);
    }
    return dflt;
}

static jv f_float(jrender *r, jv v, const jargs *A) {
    jv dflt = arg(A, 0, "default", mnv__jv_float(0.0));
    if (v.t == JV_FLOAT) return v;
    if (v.t == JV_INT) return mnv__jv_float((double)v.u.i);
    if (v.t == JV_BOOL) return mnv__jv_float(v.u.b);
    if (v.t == JV_STR) {
        jv t = strip(r, v, NULL, 0, 3);
        char buf[64];
        if (t.u.s.n == 0 || t.u.s.n >= sizeof buf) return dflt;
        memcpy(buf, t.u.s.p, t.u.s.n);
        buf[t.u.s.n] = 0;
        char *end;
        double d = strtod(buf, &end);
        if (!*end) return mnv__jv_float(d);
    }
    return dflt;
}

/* select/reject/selectattr/rejectattr */
static jv f_select(jrender *r, jframe *f, jv in, const jargs *A, bool attr, bool keep) {
    jlist *l = mnv__jr_iter(r, in);
    int first = 0;
    const char *path = NULL;
    if (attr) {
        path = arg_str(A, 0, NULL, NULL, NULL);
        if (!path) mnv__jr_fail(r, "%s: an attribute is needed", A->fname);
        first = 1;
    }
    const char *test = A->nargs > first ? arg_str(A, first, NULL, NULL, NULL) : NULL;
    jv out = mnv__jv_list(r, 0);
    for (size_t i = 0; i < l->n; i++) {
        jv x = path ? attr_path(r, l->v[i], path) : l->v[i];
        bool t = test ? mnv__jr_test(r, f, test, x, A->args + first + 1, A->nargs - first - 1) : mnv__jv_truthy(x);
        if (t == keep) mnv__jl_push(r, out.u.l, l->v[i]);
    }
    out.gen = 1;
    return out;
}

static jv f_map(jrender *r, jframe *f, jv in, const jargs *A) {
    jlist *l = mnv__jr_iter(r, in);
    jv out = mnv__jv_list(r, l->n);
    jv attr = arg(A, -1, "attribute", mnv__jv_none());
    if (attr.t == JV_STR || attr.t == JV_INT) {
        jv dflt = arg(A, -1, "default", mnv__jv_undef(NULL));
        jv path = mnv__jv_tostr(r, attr);
        for (size_t i = 0; i < l->n; i++) {
            jv x = attr_path(r, l->v[i], path.u.s.p);
            if (x.t == JV_UNDEF && dflt.t != JV_UNDEF) x = dflt;
            mnv__jl_push(r, out.u.l, x);
        }
        out.gen = 1;
        return out;
    }
    const char *filter = arg_str(A, 0, NULL, NULL, NULL);
    if (!filter) mnv__jr_fail(r, "map: a filter name or attribute= is needed");
    for (size_t i = 0; i < l->n; i++)
        mnv__jl_push(r, out.u.l, mnv__jr_filter(r, f, filter, l->v[i], A->args + 1, A->nargs - 1, A->kwn, A->kwv, A->nkw));
    out.gen = 1;
    return out;
}

static jv f_join(jrender *r, jv in, const jargs *A) {
    size_t dl;
    const char *d = arg_str(A, 0, "d", "", &dl);
    jv attr = arg(A, 1, "attribute", mnv__jv_none());
    jlist *l = mnv__jr_iter(r, in);
    jbuf b = {0};
    for (size_t i = 0; i < l->n; i++) {
        if (i) mnv__jb_put(r, &b, d, dl);
        jv x = l->v[i];
        if (attr.t == JV_STR) x = attr_path(r, x, attr.u.s.p);
        jv s = mnv__jv_tostr(r, x);
        mnv__jb_put(r, &b, s.u.s.p, s.u.s.n);
    }
    return mnv__jb_take(r, &b);
}

static jv f_unique(jrender *r, jv in, const jargs *A) {
    bool cs = arg_bool(A, 0, "case_sensitive", false);
    jv attr = arg(A, 1, "attribute", mnv__jv_none());
    jlist *l = mnv__jr_iter(r, in);
    jv out = mnv__jv_list(r, 0), seen = mnv__jv_list(r, 0);
    for (size_t i = 0; i < l->n; i++) {
        jv k = l->v[i];
        if (attr.t == JV_STR) k = attr_path(r, k, attr.u.s.p);
        k = sort_key(r, k, cs);
        bool dup = false;
        for (size_t j = 0; j < seen.u.l->n && !dup; j++) dup = mnv__jv_eq(seen.u.l->v[j], k);
        if (dup) continue;
        mnv__jl_push(r, seen.u.l, k);
        mnv__jl_push(r, out.u.l, l->v[i]);
    }
    out.gen = 1;
    return out;
}

static jv f_minmax(jrender *r, jv in, const jargs *A, bool max) {
    bool cs = arg_bool(A, 0, "case_sensitive", false);
    jv attr = arg(A, 1, "attribute", mnv__jv_none());
    jlist *l = mnv__jr_iter(r, in);
    if (!l->n) return mnv__jv_undef("no items for min/max");
    size_t best = 0;
    for (size_t i = 1; i < l->n; i++) {
        jv a = l->v[i], b = l->v[best];
        if (attr.t == JV_STR) {
            a = attr_path(r, a, attr.u.s.p);
            b = attr_path(r, b, attr.u.s.p);
        }
        int c = mnv__jv_cmp(r, sort_key(r, a, cs), sort_key(r, b, cs));
        if (max ? c > 0 : c < 0) best = i;
    }
    return l->v[best];
}

static jv f_escape(jrender *r, jv s) {
    jbuf b = {0};
    for (size_t i = 0; i < s.u.s.n; i++) {
        char c = s.u.s.p[i];
        const char *e = c == '&' ? "&amp;" : c == '<' ? "&lt;" : c == '>' ? "&gt;" : c == '"' ? "&#34;"
                      : c == '\'' ? "&#39;" : NULL;
        if (e) mnv__jb_puts(r, &b, e);
        else mnv__jb_put(r, &b, &c, 1);
    }
    return mnv__jb_take(r, &b);
}

static jv f_reverse(jrender *r, jv in) {
    if (in.t == JV_STR) {
        jlist *l = mnv__jr_iter(r, in);
        jbuf b = {0};
        for (size_t i = l->n; i-- > 0;) mnv__jb_put(r, &b, l->v[i].u.s.p, l->v[i].u.s.n);
        return mnv__jb_take(r, &b);
    }
    jlist *l = mnv__jr_iter(r, in);
    jv out = mnv__jv_list(r, l->n);
    for (size_t i = l->n; i-- > 0;) mnv__jl_push(r, out.u.l, l->v[i]);
    out.gen = 1; /* reversed(): an iterator */
    return out;
}

static jv f_sum(jrender *r, jv in, const jargs *A) {
    jv attr = arg(A, 0, "attribute", mnv__jv_none());
    jv acc = arg(A, 1, "start", mnv__jv_int(0));
    jlist *l = mnv__jr_iter(r, in);
    for (size_t i = 0; i < l->n; i++) {
        jv x = attr.t == JV_STR ? attr_path(r, l->v[i], attr.u.s.p) : l->v[i];
        bool fl = acc.t == JV_FLOAT || x.t == JV_FLOAT;
        if ((acc.t != JV_INT && acc.t != JV_FLOAT && acc.t != JV_BOOL) || (x.t != JV_INT && x.t != JV_FLOAT && x.t != JV_BOOL))
            mnv__jr_fail(r, "sum: unsupported operand types '%s' and '%s'", mnv__jv_typename(acc), mnv__jv_typename(x));
        if (fl) acc = mnv__jv_float((acc.t == JV_FLOAT ? acc.u.f : acc.t == JV_INT ? (double)acc.u.i : acc.u.b) +
                                   (x.t == JV_FLOAT ? x.u.f : x.t == JV_INT ? (double)x.u.i : x.u.b));
        else {
            int64_t z;
            if (__builtin_add_overflow(acc.t == JV_INT ? acc.u.i : acc.u.b, x.t == JV_INT ? x.u.i : x.u.b, &z))
                mnv__jr_fail(r, "sum: integer overflow");
            acc = mnv__jv_int(z);
        }
    }
    return acc;
}

static jv f_length(jrender *r, jv in) {
    switch (in.t) {
    case JV_UNDEF: return mnv__jv_int(0);
    case JV_STR: return mnv__jv_int((int64_t)cp_count(in.u.s.p, in.u.s.n));
    case JV_LIST:
        if (in.gen) mnv__jr_fail(r, "object of type 'generator' has no len()");
        return mnv__jv_int((int64_t)in.u.l->n);
    case JV_DICT: case JV_NS: return mnv__jv_int((int64_t)in.u.d->n);
    default: mnv__jr_fail(r, "object of type '%s' has no len()", mnv__jv_typename(in));
    }
}

static jv f_dictsort(jrender *r, jv in, const jargs *A) {
    if (in.t != JV_DICT) mnv__jr_fail(r, "dictsort: expected a mapping, got %s", mnv__jv_typename(in));
    size_t bl;
    const char *by = arg_str(A, 1, "by", "key", &bl);
    bool byv = !strcmp(by, "value");
    if (!byv && strcmp(by, "key")) mnv__jr_fail(r, "dictsort: 'by' must be 'key' or 'value'");
    return sorted(r, items_of(r, in.u.d).u.l, NULL, arg_bool(A, 0, "case_sensitive", false),
                  arg_bool(A, 2, "reverse", false), byv ? 2 : 1);
}

jv mnv__jr_filter(jrender *r, jframe *f, const char *name, jv in, jv *args, int nargs, const char **kwn, jv *kwv,
                  int nkw) {
    jargs A = {r, name, args, nargs, kwn, kwv, nkw};
    if (!strcmp(name, "default") || !strcmp(name, "d")) {
        jv dv = arg(&A, 0, "default_value", mnv__jv_strz(""));
        bool boolean = arg_bool(&A, 1, "boolean", false);
        if (in.t == JV_UNDEF || (boolean && !mnv__jv_truthy(in))) return dv;
        return in;
    }
    if (!strcmp(name, "tojson")) return f_tojson(r, in, &A);
    if (!strcmp(name, "length") || !strcmp(name, "count")) return f_length(r, in);
    if (!strcmp(name, "string")) return mnv__jv_tostr(r, in);
    if (!strcmp(name, "list")) return (jv){.t = JV_LIST, .u.l = mnv__jr_iter(r, in)}; /* not lazy */
    if (!strcmp(name, "safe") || !strcmp(name, "attr")) {
        if (name[0] == 'a') {
            size_t l;
            const char *a = arg_str(&A, 0, "name", NULL, &l);
            if (!a) mnv__jr_fail(r, "attr: a name is needed");
            return mnv__jr_getattr(r, in, a, l);
        }
        return in;
    }
    if (!strcmp(name, "items")) {
        if (in.t == JV_UNDEF) {
            jv empty = mnv__jv_list(r, 0);
            empty.gen = 1;
            return empty;
        }
        if (in.t != JV_DICT) mnv__jr_fail(r, "items: expected a mapping, got %s", mnv__jv_typename(in));
        jv it = items_of(r, in.u.d);
        it.gen = 1;
        return it;
    }
    if (!strcmp(name, "dictsort")) return f_dictsort(r, in, &A);
    if (!strcmp(name, "sort")) {
        jv attr = arg(&A, 2, "attribute", mnv__jv_none());
        return sorted(r, mnv__jr_iter(r, in), attr.t == JV_STR ? attr.u.s.p : NULL,
                      arg_bool(&A, 1, "case_sensitive", false), arg_bool(&A, 0, "reverse", false), 0);
    }
    if (!strcmp(name, "first") || !strcmp(name, "last")) {
        if (in.t == JV_UNDEF) return in;
        jlist *l = mnv__jr_iter(r, in);
        if (!l->n) return mnv__jv_undef("no first/last item of an empty sequence");
        return l->v[name[0] == 'f' ? 0 : l->n - 1];
    }
    if (!strcmp(name, "join")) return f_join(r, in, &A);
    if (!strcmp(name, "map")) return f_map(r, f, in, &A);
    if (!strcmp(name, "select") || !strcmp(name, "reject")) return f_select(r, f, in, &A, false, name[0] == 's');
    if (!strcmp(name, "selectattr") || !strcmp(name, "rejectattr")) return f_select(r, f, in, &A, true, name[0] == 's');
    if (!strcmp(name, "unique")) return f_unique(r, in, &A);
    if (!strcmp(name, "min") || !strcmp(name, "max")) return f_minmax(r, in, &A, name[1] == 'a');
    if (!strcmp(name, "reverse")) return f_reverse(r, in);
    if (!strcmp(name, "sum")) return f_sum(r, in, &A);
    if (!strcmp(name, "int")) return f_int(r, in, &A);
    if (!strcmp(name, "float")) return f_float(r, in, &A);
    if (!strcmp(name, "round")) return f_round(r, in, &A);
    if (!strcmp(name, "abs")) {
        if (in.t == JV_FLOAT) return mnv__jv_float(fabs(in.u.f));
        if (in.t == JV_INT && in.u.i != INT64_MIN) return mnv__jv_int(in.u.i < 0 ? -in.u.i : in.u.i);
        if (in.t == JV_BOOL) return mnv__jv_int(in.u.b);
        mnv__jr_fail(r, "abs: bad operand type '%s'", mnv__jv_typename(in));
    }
    /* the string filters: the input as str() */
    jv s = mnv__jv_tostr(r, in);
    if (!strcmp(name, "trim")) {
        size_t cl;
        const char *chars = arg_str(&A, 0, "chars", NULL, &cl);
        return strip(r, s, chars, cl, 3);
    }
    if (!strcmp(name, "upper")) return map_case(r, s, 1);
    if (!strcmp(name, "lower")) return map_case(r, s, 0);
    if (!strcmp(name, "capitalize")) return map_case(r, s, 2);
    if (!strcmp(name, "title")) return map_case(r, s, 4);
    if (!strcmp(name, "replace")) {
        jv o = mnv__jv_tostr(r, arg(&A, 0, "old", mnv__jv_strz("")));
        jv n = mnv__jv_tostr(r, arg(&A, 1, "new", mnv__jv_strz("")));
        return replace(r, s, o, n, arg_int(&A, 2, "count", -1));
    }
    if (!strcmp(name, "indent")) return f_indent(r, s, &A);
    if (!strcmp(name, "e") || !strcmp(name, "escape") || !strcmp(name, "forceescape")) return f_escape(r, s);
    if (!strcmp(name, "format")) return mnv__jr_percent_format(r, s, args, nargs);
    if (!strcmp(name, "wordcount")) { /* runs of \w (letters, digits, _; any non-ASCII counted as a letter) */
        int64_t words = 0;
        bool in_word = false;
        for (size_t i = 0; i < s.u.s.n; i++) {
            unsigned char c = (unsigned char)s.u.s.p[i];
            bool w = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c >= 0x80;
            words += w && !in_word;
            in_word = w;
        }
        return mnv__jv_int(words);
    }
    mnv__jr_fail(r, "no filter named '%s'", name);
}
