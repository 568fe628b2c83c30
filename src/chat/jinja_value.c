/* Jinja values: the arena they live in, constructors, Python's truthiness,
 * equality and ordering, str()/repr() as Python prints them, json.dumps as
 * transformers' tojson calls it, and conversion from cJSON. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "chat/jinja.h"

/* ---- arena ---- */
struct jblock {
    jblock *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

void *mnv__ja_alloc(jarena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    if (a->used + n > a->limit || n > a->limit) {
        if (a->fail) {
            snprintf(a->err, 512, "the template used more than %zu bytes of memory", a->limit);
            longjmp(*a->fail, 1);
        }
        return NULL;
    }
    jblock *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        b = malloc(sizeof *b + cap);
        if (!b) {
            if (a->fail) {
                snprintf(a->err, 512, "out of memory");
                longjmp(*a->fail, 1);
            }
            return NULL;
        }
        b->used = 0;
        b->cap = cap;
        b->next = a->head;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    a->used += n;
    return p;
}

void mnv__ja_free(jarena *a) {
    jblock *b = a->head;
    while (b) {
        jblock *n = b->next;
        free(b);
        b = n;
    }
    a->head = NULL;
    a->used = 0;
}

/* ---- errors ---- */
_Noreturn void mnv__jr_fail(jrender *r, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(r->err, sizeof r->err, "line %d: %s", r->line, msg);
    longjmp(r->jmp, 1);
}

/* ---- constructors ---- */
jv mnv__jv_undef(const char *name) { return (jv){.t = JV_UNDEF, .uname = name}; }
jv mnv__jv_none(void) { return (jv){.t = JV_NONE}; }
jv mnv__jv_bool(bool b) { return (jv){.t = JV_BOOL, .u.b = b}; }
jv mnv__jv_int(int64_t i) { return (jv){.t = JV_INT, .u.i = i}; }
jv mnv__jv_float(double f) { return (jv){.t = JV_FLOAT, .u.f = f}; }
jv mnv__jv_strz(const char *s) { return (jv){.t = JV_STR, .u.s = {s, strlen(s)}}; }

jv mnv__jv_str(jrender *r, const char *s, size_t n) {
    char *p = mnv__ja_alloc(r->a, n + 1);
    if (n) memcpy(p, s, n);
    p[n] = 0;
    return (jv){.t = JV_STR, .u.s = {p, n}};
}

jv mnv__jv_list(jrender *r, size_t cap) {
    jlist *l = mnv__ja_alloc(r->a, sizeof *l);
    l->n = 0;
    l->cap = cap;
    l->v = cap ? mnv__ja_alloc(r->a, cap * sizeof *l->v) : NULL;
    return (jv){.t = JV_LIST, .u.l = l};
}

jv mnv__jv_dict(jrender *r, size_t cap) {
    jdict *d = mnv__ja_alloc(r->a, sizeof *d);
    d->n = 0;
    d->cap = cap;
    d->k = cap ? mnv__ja_alloc(r->a, cap * sizeof *d->k) : NULL;
    d->v = cap ? mnv__ja_alloc(r->a, cap * sizeof *d->v) : NULL;
    return (jv){.t = JV_DICT, .u.d = d};
}

void mnv__jl_push(jrender *r, jlist *l, jv v) {
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 4;
        jv *nv = mnv__ja_alloc(r->a, nc * sizeof *nv);
        if (l->n) memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv;
        l->cap = nc;
    }
    l->v[l->n++] = v;
}

static bool dict_find(const jdict *d, jv k, size_t *idx) {
    for (size_t i = 0; i < d->n; i++)
        if (mnv__jv_eq(d->k[i], k)) {
            *idx = i;
            return true;
        }
    return false;
}

void mnv__jd_set(jrender *r, jdict *d, jv k, jv v) {
    size_t i;
    if (dict_find(d, k, &i)) {
        d->v[i] = v;
        return;
    }
    if (d->n == d->cap) {
        size_t nc = d->cap ? d->cap * 2 : 4;
        jv *nk = mnv__ja_alloc(r->a, nc * sizeof *nk);
        jv *nv = mnv__ja_alloc(r->a, nc * sizeof *nv);
        if (d->n) {
            memcpy(nk, d->k, d->n * sizeof *nk);
            memcpy(nv, d->v, d->n * sizeof *nv);
        }
        d->k = nk;
        d->v = nv;
        d->cap = nc;
    }
    d->k[d->n] = k;
    d->v[d->n] = v;
    d->n++;
}

bool mnv__jd_get(const jdict *d, jv k, jv *out) {
    size_t i;
    if (!dict_find(d, k, &i)) return false;
    *out = d->v[i];
    return true;
}

bool mnv__jd_gets(const jdict *d, const char *k, jv *out) {
    size_t n = strlen(k);
    for (size_t i = 0; i < d->n; i++)
        if (d->k[i].t == JV_STR && d->k[i].u.s.n == n && memcmp(d->k[i].u.s.p, k, n) == 0) {
            *out = d->v[i];
            return true;
        }
    return false;
}

/* ---- Python semantics ---- */
bool mnv__jv_truthy(jv v) {
    switch (v.t) {
    case JV_UNDEF: case JV_NONE: return false;
    case JV_BOOL: return v.u.b;
    case JV_INT: return v.u.i != 0;
    case JV_FLOAT: return v.u.f != 0.0;
    case JV_STR: return v.u.s.n != 0;
    case JV_LIST: return v.u.l->n != 0;
    case JV_DICT: return v.u.d->n != 0;
    default: return true;
    }
}

static bool is_num(jv v) { return v.t == JV_BOOL || v.t == JV_INT || v.t == JV_FLOAT; }
static double num_f(jv v) { return v.t == JV_FLOAT ? v.u.f : v.t == JV_INT ? (double)v.u.i : (double)v.u.b; }
static int64_t num_i(jv v) { return v.t == JV_INT ? v.u.i : (int64_t)v.u.b; }

bool mnv__jv_eq(jv a, jv b) {
    if (is_num(a) && is_num(b)) {
        if (a.t == JV_FLOAT || b.t == JV_FLOAT) return num_f(a) == num_f(b);
        return num_i(a) == num_i(b);
    }
    if (a.t != b.t) return false;
    switch (a.t) {
    case JV_UNDEF: case JV_NONE: return true;
    case JV_STR: return a.u.s.n == b.u.s.n && memcmp(a.u.s.p, b.u.s.p, a.u.s.n) == 0;
    case JV_LIST:
        if (a.u.l->n != b.u.l->n) return false;
        for (size_t i = 0; i < a.u.l->n; i++)
            if (!mnv__jv_eq(a.u.l->v[i], b.u.l->v[i])) return false;
        return true;
    case JV_DICT:
        if (a.u.d->n != b.u.d->n) return false;
        for (size_t i = 0; i < a.u.d->n; i++) {
            jv o;
            if (!mnv__jd_get(b.u.d, a.u.d->k[i], &o) || !mnv__jv_eq(a.u.d->v[i], o)) return false;
        }
        return true;
    case JV_NS: return a.u.d == b.u.d;
    case JV_FUNC: return a.u.fn == b.u.fn;
    case JV_LOOP: return a.u.loop == b.u.loop;
    default: return false;
    }
}

const char *mnv__jv_typename(jv v) {
    static const char *const names[] = {"Undefined", "NoneType", "bool", "int", "float", "str",
                                        "list", "dict", "Namespace", "function", "LoopContext"};
    if (v.t == JV_LIST && v.tuple) return "tuple";
    return names[v.t];
}

int mnv__jv_cmp(jrender *r, jv a, jv b) {
    if (is_num(a) && is_num(b)) {
        if (a.t == JV_FLOAT || b.t == JV_FLOAT) {
            double x = num_f(a), y = num_f(b);
            return x < y ? -1 : x > y ? 1 : 0;
        }
        int64_t x = num_i(a), y = num_i(b);
        return x < y ? -1 : x > y ? 1 : 0;
    }
    if (a.t == JV_STR && b.t == JV_STR) {
        size_t n = MNV_MIN(a.u.s.n, b.u.s.n);
        int c = memcmp(a.u.s.p, b.u.s.p, n);
        if (c) return c < 0 ? -1 : 1;
        return a.u.s.n < b.u.s.n ? -1 : a.u.s.n > b.u.s.n ? 1 : 0;
    }
    if (a.t == JV_LIST && b.t == JV_LIST) {
        size_t n = MNV_MIN(a.u.l->n, b.u.l->n);
        for (size_t i = 0; i < n; i++) {
            if (mnv__jv_eq(a.u.l->v[i], b.u.l->v[i])) continue;
            return mnv__jv_cmp(r, a.u.l->v[i], b.u.l->v[i]);
        }
        return a.u.l->n < b.u.l->n ? -1 : a.u.l->n > b.u.l->n ? 1 : 0;
    }
    mnv__jr_fail(r, "cannot compare '%s' with '%s'", mnv__jv_typename(a), mnv__jv_typename(b));
}

/* ---- text buffers ---- */
void mnv__jb_put(jrender *r, jbuf *b, const char *s, size_t n) {
    if (!n) return;
    if (b == r->out && b->n + n > r->lim.max_output)
        mnv__jr_fail(r, "the output is longer than %zu bytes", r->lim.max_output);
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n + 1) nc *= 2;
        char *np = mnv__ja_alloc(r->a, nc);
        if (b->n) memcpy(np, b->p, b->n);
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void mnv__jb_puts(jrender *r, jbuf *b, const char *s) { mnv__jb_put(r, b, s, strlen(s)); }

jv mnv__jb_take(jrender *r, jbuf *b) {
    if (!b->n) return mnv__jv_strz("");
    return (jv){.t = JV_STR, .u.s = {b->p, b->n}};
}

/* ---- Python float repr: the shortest digits that round-trip, in fixed
 * notation for exponents -4..15 and scientific otherwise ---- */
void mnv__jfloat_repr(double f, char *buf, size_t cap) {
    if (isnan(f)) {
        snprintf(buf, cap, "nan");
        return;
    }
    if (isinf(f)) {
        snprintf(buf, cap, f < 0 ? "-inf" : "inf");
        return;
    }
    char tmp[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, f);
        if (strtod(tmp, NULL) == f) break;
    }
    bool neg = tmp[0] == '-';
    const char *m = tmp + neg;
    char digits[24];
    int nd = 0;
    const char *e = strchr(m, 'e');
    for (const char *p = m; p < e; p++)
        if (*p != '.') digits[nd++] = *p;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    int exp = atoi(e + 1);
    char out[64];
    int k = 0;
    if (neg) out[k++] = '-';
    if (exp >= -4 && exp < 16) {
        if (exp >= 0) {
            for (int i = 0; i <= exp; i++) out[k++] = i < nd ? digits[i] : '0';
            out[k++] = '.';
            if (nd > exp + 1)
                for (int i = exp + 1; i < nd; i++) out[k++] = digits[i];
            else
                out[k++] = '0';
        } else {
            out[k++] = '0';
            out[k++] = '.';
            for (int i = 0; i < -exp - 1; i++) out[k++] = '0';
            for (int i = 0; i < nd; i++) out[k++] = digits[i];
        }
        out[k] = 0;
    } else {
        out[k++] = digits[0];
        if (nd > 1) {
            out[k++] = '.';
            for (int i = 1; i < nd; i++) out[k++] = digits[i];
        }
        snprintf(out + k, sizeof out - (size_t)k, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    }
    snprintf(buf, cap, "%s", out);
}

/* ---- str() and repr() ---- */
static void repr_str(jrender *r, jbuf *b, const char *s, size_t n) {
    bool has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    mnv__jb_put(r, b, &q, 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '\\') mnv__jb_puts(r, b, "\\\\");
        else if (c == (unsigned char)q) {
            esc[0] = '\\';
            esc[1] = q;
            mnv__jb_put(r, b, esc, 2);
        } else if (c == '\n') mnv__jb_puts(r, b, "\\n");
        else if (c == '\r') mnv__jb_puts(r, b, "\\r");
        else if (c == '\t') mnv__jb_puts(r, b, "\\t");
        else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\x%02x", c);
            mnv__jb_puts(r, b, esc);
        } else mnv__jb_put(r, b, (const char *)&s[i], 1);
    }
    mnv__jb_put(r, b, &q, 1);
}

static void put_scalar(jrender *r, jbuf *b, jv v) {
    char tmp[64];
    switch (v.t) {
    case JV_NONE: mnv__jb_puts(r, b, "None"); break;
    case JV_BOOL: mnv__jb_puts(r, b, v.u.b ? "True" : "False"); break;
    case JV_INT:
        snprintf(tmp, sizeof tmp, "%lld", (long long)v.u.i);
        mnv__jb_puts(r, b, tmp);
        break;
    case JV_FLOAT:
        mnv__jfloat_repr(v.u.f, tmp, sizeof tmp);
        mnv__jb_puts(r, b, tmp);
        break;
    default: break;
    }
}

static void repr_depth(jrender *r, jbuf *b, jv v, int depth) {
    if (depth > 200) mnv__jr_fail(r, "value nested too deeply to print");
    switch (v.t) {
    case JV_UNDEF: break;
    case JV_STR: repr_str(r, b, v.u.s.p, v.u.s.n); break;
    case JV_LIST:
        mnv__jb_puts(r, b, v.tuple ? "(" : "[");
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i) mnv__jb_puts(r, b, ", ");
            repr_depth(r, b, v.u.l->v[i], depth + 1);
        }
        if (v.tuple && v.u.l->n == 1) mnv__jb_puts(r, b, ",");
        mnv__jb_puts(r, b, v.tuple ? ")" : "]");
        break;
    case JV_DICT:
        mnv__jb_puts(r, b, "{");
        for (size_t i = 0; i < v.u.d->n; i++) {
            if (i) mnv__jb_puts(r, b, ", ");
            repr_depth(r, b, v.u.d->k[i], depth + 1);
            mnv__jb_puts(r, b, ": ");
            repr_depth(r, b, v.u.d->v[i], depth + 1);
        }
        mnv__jb_puts(r, b, "}");
        break;
    case JV_NS: mnv__jb_puts(r, b, "<Namespace>"); break;
    case JV_FUNC: mnv__jb_puts(r, b, "<function>"); break;
    case JV_LOOP: mnv__jb_puts(r, b, "<LoopContext>"); break;
    default: put_scalar(r, b, v);
    }
}

void mnv__jv_repr(jrender *r, jbuf *b, jv v) { repr_depth(r, b, v, 0); }

jv mnv__jv_tostr(jrender *r, jv v) {
    if (v.t == JV_STR) return v;
    if (v.t == JV_UNDEF) return mnv__jv_strz("");
    jbuf b = {0};
    repr_depth(r, &b, v, 0);
    return mnv__jb_take(r, &b);
}

/* ---- json.dumps(ensure_ascii=False) ---- */
static void json_str(jrender *r, jbuf *b, const char *s, size_t n) {
    mnv__jb_puts(r, b, "\"");
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char tmp[8];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (c < 0x20) {
                snprintf(tmp, sizeof tmp, "\\u%04x", c);
                esc = tmp;
            }
        }
        if (!esc) continue;
        mnv__jb_put(r, b, s + run, i - run);
        mnv__jb_puts(r, b, esc);
        run = i + 1;
    }
    mnv__jb_put(r, b, s + run, n - run);
    mnv__jb_puts(r, b, "\"");
}

static void json_newline(jrender *r, jbuf *b, const char *indent, int level) {
    mnv__jb_puts(r, b, "\n");
    for (int i = 0; i < level; i++) mnv__jb_puts(r, b, indent);
}

static int key_cmp_r(jrender *r, const jdict *d, size_t a, size_t b) { return mnv__jv_cmp(r, d->k[a], d->k[b]); }

void mnv__jv_tojson(jrender *r, jbuf *b, jv v, const char *indent, bool sort_keys, int level) {
    if (level > 200) mnv__jr_fail(r, "value nested too deeply for tojson");
    char tmp[64];
    switch (v.t) {
    case JV_NONE: mnv__jb_puts(r, b, "null"); return;
    case JV_BOOL: mnv__jb_puts(r, b, v.u.b ? "true" : "false"); return;
    case JV_INT: put_scalar(r, b, v); return;
    case JV_FLOAT:
        if (isnan(v.u.f)) mnv__jb_puts(r, b, "NaN");
        else if (isinf(v.u.f)) mnv__jb_puts(r, b, v.u.f < 0 ? "-Infinity" : "Infinity");
        else {
            mnv__jfloat_repr(v.u.f, tmp, sizeof tmp);
            mnv__jb_puts(r, b, tmp);
        }
        return;
    case JV_STR: json_str(r, b, v.u.s.p, v.u.s.n); return;
    case JV_LIST:
        if (!v.u.l->n) {
            mnv__jb_puts(r, b, "[]");
            return;
        }
        mnv__jb_puts(r, b, "[");
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i) mnv__jb_puts(r, b, indent ? "," : ", ");
            if (indent) json_newline(r, b, indent, level + 1);
            mnv__jv_tojson(r, b, v.u.l->v[i], indent, sort_keys, level + 1);
        }
        if (indent) json_newline(r, b, indent, level);
        mnv__jb_puts(r, b, "]");
        return;
    case JV_DICT: {
        const jdict *d = v.u.d;
        if (!d->n) {
            mnv__jb_puts(r, b, "{}");
            return;
        }
        size_t *order = mnv__ja_alloc(r->a, d->n * sizeof *order);
        for (size_t i = 0; i < d->n; i++) order[i] = i;
        if (sort_keys) /* insertion sort: stable, and the comparison may fail */
            for (size_t i = 1; i < d->n; i++)
                for (size_t j = i; j > 0 && key_cmp_r(r, d, order[j - 1], order[j]) > 0; j--) {
                    size_t t = order[j];
                    order[j] = order[j - 1];
                    order[j - 1] = t;
                }
        mnv__jb_puts(r, b, "{");
        for (size_t i = 0; i < d->n; i++) {
            jv k = d->k[order[i]];
            if (i) mnv__jb_puts(r, b, indent ? "," : ", ");
            if (indent) json_newline(r, b, indent, level + 1);
            if (k.t == JV_STR) json_str(r, b, k.u.s.p, k.u.s.n);
            else if (k.t == JV_INT || k.t == JV_FLOAT || k.t == JV_BOOL || k.t == JV_NONE) {
                jbuf kb = {0};
                mnv__jv_tojson(r, &kb, k, NULL, false, level + 1);
                json_str(r, b, kb.p, kb.n);
            } else mnv__jr_fail(r, "tojson: keys must be str, int, float, bool or None, not %s",
                                mnv__jv_typename(k));
            mnv__jb_puts(r, b, ": ");
            mnv__jv_tojson(r, b, d->v[order[i]], indent, sort_keys, level + 1);
        }
        if (indent) json_newline(r, b, indent, level);
        mnv__jb_puts(r, b, "}");
        return;
    }
    default:
        mnv__jr_fail(r, "Object of type %s is not JSON serializable", mnv__jv_typename(v));
    }
}

jv mnv__jv_from_cjson(jrender *r, const cJSON *j, int depth) {
    if (!j) return mnv__jv_undef(NULL);
    if (depth > 200) mnv__jr_fail(r, "a variable is nested too deeply");
    if (cJSON_IsNull(j)) return mnv__jv_none();
    if (cJSON_IsBool(j)) return mnv__jv_bool(cJSON_IsTrue(j));
    if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        /* cJSON keeps no trace of "3.0" against "3": an integral value is an
         * int (but -0.0, which only a float can be, stays one) */
        if (d == floor(d) && fabs(d) < 9.007199254740992e15 && !(d == 0 && signbit(d)))
            return mnv__jv_int((int64_t)d);
        return mnv__jv_float(d);
    }
    if (cJSON_IsString(j)) return mnv__jv_str(r, j->valuestring, strlen(j->valuestring));
    if (cJSON_IsArray(j)) {
        jv l = mnv__jv_list(r, (size_t)cJSON_GetArraySize(j));
        for (const cJSON *c = j->child; c; c = c->next) mnv__jl_push(r, l.u.l, mnv__jv_from_cjson(r, c, depth + 1));
        return l;
    }
    if (cJSON_IsObject(j)) {
        jv d = mnv__jv_dict(r, (size_t)cJSON_GetArraySize(j));
        for (const cJSON *c = j->child; c; c = c->next)
            mnv__jd_set(r, d.u.d, mnv__jv_str(r, c->string ? c->string : "", c->string ? strlen(c->string) : 0),
                        mnv__jv_from_cjson(r, c, depth + 1));
        return d;
    }
    return mnv__jv_none();
}
