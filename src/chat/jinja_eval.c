/* Jinja evaluator: expressions with Python's semantics, statements with
 * Jinja's scoping (a for loop's body and a macro's body are frames of their
 * own; if does not make one), and the render entry point. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "chat/jinja.h"

/* ---- frames ---- */
static jframe *frame_new(jrender *r, jframe *parent) {
    jframe *f = mnv__ja_alloc(r->a, sizeof *f);
    memset(f, 0, sizeof *f);
    f->parent = parent;
    return f;
}

static void frame_set(jrender *r, jframe *f, const char *k, jv v) {
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->k[i], k) == 0) {
            f->v[i] = v;
            return;
        }
    if (f->n == f->cap) {
        size_t nc = f->cap ? f->cap * 2 : 8;
        const char **nk = mnv__ja_alloc(r->a, nc * sizeof *nk);
        jv *nv = mnv__ja_alloc(r->a, nc * sizeof *nv);
        if (f->n) {
            memcpy(nk, f->k, f->n * sizeof *nk);
            memcpy(nv, f->v, f->n * sizeof *nv);
        }
        f->k = nk;
        f->v = nv;
        f->cap = nc;
    }
    f->k[f->n] = k;
    f->v[f->n] = v;
    f->n++;
}

static bool frame_get(const jframe *f, const char *k, jv *out) {
    for (; f; f = f->parent)
        for (size_t i = f->n; i-- > 0;)
            if (strcmp(f->k[i], k) == 0) {
                *out = f->v[i];
                return true;
            }
    return false;
}

static jv func_value(jrender *r, jfunc_kind kind, const char *name) {
    jfunc *fn = mnv__ja_alloc(r->a, sizeof *fn);
    memset(fn, 0, sizeof *fn);
    fn->kind = kind;
    fn->name = name;
    return (jv){.t = JV_FUNC, .u.fn = fn};
}

static void step(jrender *r) {
    if (++r->steps > r->lim.max_steps)
        mnv__jr_fail(r, "the template ran more than %llu loop iterations and calls",
                     (unsigned long long)r->lim.max_steps);
}

/* ---- strings by code point ---- */
static size_t utf8_len(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

/* byte offsets of each code point of s, plus the end: *count code points */
static size_t *cp_offsets(jrender *r, const char *s, size_t n, size_t *count) {
    size_t *off = mnv__ja_alloc(r->a, (n + 1) * sizeof *off);
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        off[k++] = i;
        size_t l = utf8_len((unsigned char)s[i]);
        i = i + l > n ? n : i + l;
    }
    off[k] = n;
    *count = k;
    return off;
}

jlist *mnv__jr_iter(jrender *r, jv v) {
    switch (v.t) {
    case JV_LIST: return v.u.l;
    case JV_UNDEF: return mnv__jv_list(r, 0).u.l;
    case JV_DICT: {
        jv l = mnv__jv_list(r, v.u.d->n);
        for (size_t i = 0; i < v.u.d->n; i++) mnv__jl_push(r, l.u.l, v.u.d->k[i]);
        return l.u.l;
    }
    case JV_STR: {
        size_t n;
        size_t *off = cp_offsets(r, v.u.s.p, v.u.s.n, &n);
        jv l = mnv__jv_list(r, n);
        for (size_t i = 0; i < n; i++)
            mnv__jl_push(r, l.u.l, mnv__jv_str(r, v.u.s.p + off[i], off[i + 1] - off[i]));
        return l.u.l;
    }
    default: mnv__jr_fail(r, "'%s' object is not iterable", mnv__jv_typename(v));
    }
}

/* ---- attribute and item access ---- */
static jv loop_attr(jrender *r, jloop *L, const char *name) {
    size_t n = L->items->n, i = L->i;
    if (!strcmp(name, "index")) return mnv__jv_int((int64_t)i + 1);
    if (!strcmp(name, "index0")) return mnv__jv_int((int64_t)i);
    if (!strcmp(name, "revindex")) return mnv__jv_int((int64_t)(n - i));
    if (!strcmp(name, "revindex0")) return mnv__jv_int((int64_t)(n - i - 1));
    if (!strcmp(name, "first")) return mnv__jv_bool(i == 0);
    if (!strcmp(name, "last")) return mnv__jv_bool(i + 1 == n);
    if (!strcmp(name, "length")) return mnv__jv_int((int64_t)n);
    if (!strcmp(name, "depth")) return mnv__jv_int(1);
    if (!strcmp(name, "depth0")) return mnv__jv_int(0);
    if (!strcmp(name, "previtem")) return i > 0 ? L->items->v[i - 1] : mnv__jv_undef("there is no previous item");
    if (!strcmp(name, "nextitem")) return i + 1 < n ? L->items->v[i + 1] : mnv__jv_undef("there is no next item");
    (void)r;
    return mnv__jv_undef("'loop' has no such attribute");
}

static const char *undef_msg(jrender *r, const char *type, const char *name, size_t len) {
    char *m = mnv__ja_alloc(r->a, len + 64);
    snprintf(m, len + 64, "'%s' has no attribute '%.*s'", type, (int)len, name);
    return m;
}

jv mnv__jr_getattr(jrender *r, jv obj, const char *name, size_t len) {
    if (obj.t == JV_UNDEF)
        mnv__jr_fail(r, "%s", obj.uname ? obj.uname : "undefined value has no attributes");
    if (obj.t == JV_LOOP) {
        if (!strcmp(name, "cycle")) {
            jv f = func_value(r, JF_METHOD, "cycle");
            f.u.fn->self = obj;
            return f;
        }
        return loop_attr(r, obj.u.loop, name);
    }
    if (mnv__jr_has_method(obj, name)) {
        jv f = func_value(r, JF_METHOD, name);
        f.u.fn->self = obj;
        return f;
    }
    jv out;
    if ((obj.t == JV_DICT || obj.t == JV_NS)) {
        jv key = {.t = JV_STR, .u.s = {name, len}};
        if (mnv__jd_get(obj.u.d, key, &out)) return out;
        return mnv__jv_undef(undef_msg(r, obj.t == JV_DICT ? "dict object" : "Namespace", name, len));
    }
    char tn[64];
    snprintf(tn, sizeof tn, "%s object", mnv__jv_typename(obj));
    return mnv__jv_undef(undef_msg(r, tn, name, len));
}

static bool norm_index(int64_t i, size_t n, size_t *out) {
    if (i < 0) i += (int64_t)n;
    if (i < 0 || (uint64_t)i >= n) return false;
    *out = (size_t)i;
    return true;
}

jv mnv__jr_getitem(jrender *r, jv obj, jv key) {
    if (obj.t == JV_UNDEF)
        mnv__jr_fail(r, "%s", obj.uname ? obj.uname : "undefined value has no items");
    jv out;
    if (obj.t == JV_DICT || obj.t == JV_NS) {
        if (mnv__jd_get(obj.u.d, key, &out)) return out;
    } else if ((obj.t == JV_LIST || obj.t == JV_STR) && (key.t == JV_INT || key.t == JV_BOOL)) {
        int64_t i = key.t == JV_INT ? key.u.i : key.u.b;
        size_t k;
        if (obj.t == JV_LIST) {
            if (norm_index(i, obj.u.l->n, &k)) return obj.u.l->v[k];
        } else {
            size_t n;
            size_t *off = cp_offsets(r, obj.u.s.p, obj.u.s.n, &n);
            if (norm_index(i, n, &k)) return mnv__jv_str(r, obj.u.s.p + off[k], off[k + 1] - off[k]);
        }
        return mnv__jv_undef("index out of range");
    }
    if (key.t == JV_STR) return mnv__jr_getattr(r, obj, key.u.s.p, key.u.s.n);
    return mnv__jv_undef("no such item");
}

static int64_t slice_arg(jrender *r, jv v, int64_t dflt) {
    if (v.t == JV_NONE || v.t == JV_UNDEF) return dflt;
    if (v.t == JV_INT) return v.u.i;
    if (v.t == JV_BOOL) return v.u.b;
    mnv__jr_fail(r, "slice indices must be integers or None");
}

static jv do_slice(jrender *r, jv obj, jv a, jv b, jv c) {
    int64_t stepv = slice_arg(r, c, 1);
    if (stepv == 0) mnv__jr_fail(r, "slice step cannot be zero");
    size_t n;
    size_t *off = NULL;
    if (obj.t == JV_STR) off = cp_offsets(r, obj.u.s.p, obj.u.s.n, &n);
    else if (obj.t == JV_LIST) n = obj.u.l->n;
    else mnv__jr_fail(r, "'%s' object is not subscriptable", mnv__jv_typename(obj));
    int64_t len = (int64_t)n;
    int64_t start, stop;
    if (stepv > 0) {
        start = slice_arg(r, a, 0);
        stop = slice_arg(r, b, len);
        if (start < 0) start = start + len < 0 ? 0 : start + len;
        if (stop < 0) stop = stop + len < 0 ? 0 : stop + len;
        if (start > len) start = len;
        if (stop > len) stop = len;
    } else {
        start = slice_arg(r, a, len - 1);
        stop = slice_arg(r, b, -len - 1);
        if (start < 0) start = start + len < 0 ? -1 : start + len;
        if (stop < 0) stop = stop + len < 0 ? -1 : stop + len;
        if (start >= len) start = len - 1;
        if (stop >= len) stop = len - 1;
    }
    jbuf sb = {0};
    jv out = obj.t == JV_LIST ? mnv__jv_list(r, 0) : mnv__jv_strz("");
    for (int64_t i = start; stepv > 0 ? i < stop : i > stop; i += stepv) {
        if (obj.t == JV_LIST) mnv__jl_push(r, out.u.l, obj.u.l->v[i]);
        else mnv__jb_put(r, &sb, obj.u.s.p + off[i], off[i + 1] - off[i]);
    }
    return obj.t == JV_LIST ? out : mnv__jb_take(r, &sb);
}

/* ---- arithmetic ---- */
static bool is_num(jv v) { return v.t == JV_BOOL || v.t == JV_INT || v.t == JV_FLOAT; }
static double as_f(jv v) { return v.t == JV_FLOAT ? v.u.f : v.t == JV_INT ? (double)v.u.i : (double)v.u.b; }
static int64_t as_i(jv v) { return v.t == JV_INT ? v.u.i : v.t == JV_BOOL ? (int64_t)v.u.b : 0; }

static const char *op_name(int op) {
    switch (op) {
    case JOP_FLOORDIV: return "//";
    case JOP_POW: return "**";
    case '+': return "+";
    case '-': return "-";
    case '*': return "*";
    case '/': return "/";
    default: return "%";
    }
}

static jv repeat(jrender *r, jv seq, int64_t times) {
    if (times < 0) times = 0;
    size_t unit = seq.t == JV_STR ? seq.u.s.n : seq.u.l->n * sizeof(jv);
    if (unit && (uint64_t)times > r->lim.max_memory / unit) mnv__jr_fail(r, "repetition too large");
    if (seq.t == JV_STR) {
        jbuf b = {0};
        for (int64_t i = 0; i < times; i++) mnv__jb_put(r, &b, seq.u.s.p, seq.u.s.n);
        return mnv__jb_take(r, &b);
    }
    jv l = mnv__jv_list(r, 0);
    for (int64_t i = 0; i < times; i++)
        for (size_t k = 0; k < seq.u.l->n; k++) mnv__jl_push(r, l.u.l, seq.u.l->v[k]);
    return l;
}

static jv binop(jrender *r, int op, jv a, jv b) {
    if (is_num(a) && is_num(b)) {
        bool fl = a.t == JV_FLOAT || b.t == JV_FLOAT;
        int64_t x = as_i(a), y = as_i(b), z;
        double fx = as_f(a), fy = as_f(b);
        switch (op) {
        case '+':
            if (fl) return mnv__jv_float(fx + fy);
            if (__builtin_add_overflow(x, y, &z)) break;
            return mnv__jv_int(z);
        case '-':
            if (fl) return mnv__jv_float(fx - fy);
            if (__builtin_sub_overflow(x, y, &z)) break;
            return mnv__jv_int(z);
        case '*':
            if (fl) return mnv__jv_float(fx * fy);
            if (__builtin_mul_overflow(x, y, &z)) break;
            return mnv__jv_int(z);
        case '/':
            if (fy == 0) mnv__jr_fail(r, "division by zero");
            return mnv__jv_float(fx / fy);
        case JOP_FLOORDIV:
        case '%':
            if (fl) {
                if (fy == 0) mnv__jr_fail(r, "division by zero");
                double m = fmod(fx, fy);
                if (m != 0 && ((m < 0) != (fy < 0))) m += fy;
                return op == '%' ? mnv__jv_float(m) : mnv__jv_float(floor((fx - m) / fy + 0.5));
            }
            if (y == 0) mnv__jr_fail(r, "division by zero");
            if (x == INT64_MIN && y == -1) break;
            {
                int64_t q = x / y, m = x % y;
                if (m != 0 && ((m < 0) != (y < 0))) {
                    m += y;
                    q--;
                }
                return mnv__jv_int(op == '%' ? m : q);
            }
        case JOP_POW:
            if (!fl && y >= 0) {
                int64_t acc = 1;
                for (int64_t i = 0; i < y; i++)
                    if (__builtin_mul_overflow(acc, x, &acc)) mnv__jr_fail(r, "integer overflow in '**'");
                    else if (acc == 0 || acc == 1) break;
                if (acc == 1 && x == -1 && (y & 1)) acc = -1;
                return mnv__jv_int(acc);
            }
            return mnv__jv_float(pow(fx, fy));
        }
        mnv__jr_fail(r, "integer overflow in '%s'", op_name(op));
    }
    if (op == '+' && a.t == JV_STR && b.t == JV_STR) {
        jbuf s = {0};
        mnv__jb_put(r, &s, a.u.s.p, a.u.s.n);
        mnv__jb_put(r, &s, b.u.s.p, b.u.s.n);
        return mnv__jb_take(r, &s);
    }
    if (op == '+' && a.t == JV_LIST && b.t == JV_LIST) {
        jv l = mnv__jv_list(r, a.u.l->n + b.u.l->n);
        for (size_t i = 0; i < a.u.l->n; i++) mnv__jl_push(r, l.u.l, a.u.l->v[i]);
        for (size_t i = 0; i < b.u.l->n; i++) mnv__jl_push(r, l.u.l, b.u.l->v[i]);
        return l;
    }
    if (op == '*' && (a.t == JV_STR || a.t == JV_LIST) && (b.t == JV_INT || b.t == JV_BOOL))
        return repeat(r, a, as_i(b));
    if (op == '*' && (b.t == JV_STR || b.t == JV_LIST) && (a.t == JV_INT || a.t == JV_BOOL))
        return repeat(r, b, as_i(a));
    if (op == '%' && a.t == JV_STR) { /* "fmt" % value or % (tuple) */
        if (b.t == JV_LIST && b.tuple) return mnv__jr_percent_format(r, a, b.u.l->v, (int)b.u.l->n);
        return mnv__jr_percent_format(r, a, &b, 1);
    }
    if (a.t == JV_UNDEF || b.t == JV_UNDEF) {
        jv u = a.t == JV_UNDEF ? a : b;
        mnv__jr_fail(r, "%s", u.uname ? u.uname : "undefined value in an operation");
    }
    mnv__jr_fail(r, "unsupported operand type(s) for %s: '%s' and '%s'", op_name(op),
                 mnv__jv_typename(a), mnv__jv_typename(b));
}

static bool contains(jrender *r, jv hay, jv needle) {
    switch (hay.t) {
    case JV_STR:
        if (needle.t != JV_STR)
            mnv__jr_fail(r, "'in <string>' requires string as left operand, not %s", mnv__jv_typename(needle));
        if (needle.u.s.n == 0) return true;
        return memmem(hay.u.s.p, hay.u.s.n, needle.u.s.p, needle.u.s.n) != NULL;
    case JV_LIST:
        for (size_t i = 0; i < hay.u.l->n; i++)
            if (mnv__jv_eq(hay.u.l->v[i], needle)) return true;
        return false;
    case JV_DICT: case JV_NS: {
        jv o;
        return mnv__jd_get(hay.u.d, needle, &o);
    }
    case JV_UNDEF: return false;
    default: mnv__jr_fail(r, "argument of type '%s' is not iterable", mnv__jv_typename(hay));
    }
}

static bool compare(jrender *r, int op, jv a, jv b) {
    switch (op) {
    case JOP_EQ: return mnv__jv_eq(a, b);
    case JOP_NE: return !mnv__jv_eq(a, b);
    case '<': return mnv__jv_cmp(r, a, b) < 0;
    case '>': return mnv__jv_cmp(r, a, b) > 0;
    case JOP_LE: return mnv__jv_cmp(r, a, b) <= 0;
    case JOP_GE: return mnv__jv_cmp(r, a, b) >= 0;
    case JOP_IN: return contains(r, b, a);
    default: return !contains(r, b, a);
    }
}

/* ---- calls ---- */
static int exec_body(jrender *r, jframe *f, const jnode *body);

/* A macro, or the caller() of a call block: both have names (params),
 * w (defaults) and b (body). */
static jv call_macro(jrender *r, jfunc *fn, jv *args, int nargs, const char **kwn, jv *kwv, int nkw) {
    const jnode *m = fn->macro;
    if (++r->depth > r->lim.max_depth)
        mnv__jr_fail(r, "macros nested deeper than %d calls", r->lim.max_depth);
    step(r);
    jframe *f = frame_new(r, fn->closure);
    int np = m->nnames;
    jv varargs = mnv__jv_list(r, 0), kwargs = mnv__jv_dict(r, 0);
    for (int i = 0; i < nargs; i++) {
        if (i < np) frame_set(r, f, m->names[i], args[i]);
        else mnv__jl_push(r, varargs.u.l, args[i]);
    }
    for (int k = 0; k < nkw; k++) {
        int idx = -1;
        for (int i = 0; i < np; i++)
            if (!strcmp(m->names[i], kwn[k])) idx = i;
        if (idx >= 0 && idx < nargs)
            mnv__jr_fail(r, "macro '%s' got multiple values for argument '%s'", fn->name, kwn[k]);
        if (idx >= 0 || !strcmp(kwn[k], "caller")) frame_set(r, f, kwn[k], kwv[k]);
        else mnv__jd_set(r, kwargs.u.d, mnv__jv_strz(kwn[k]), kwv[k]);
    }
    for (int i = nargs; i < np; i++) {
        bool given = false;
        for (size_t k = 0; k < f->n; k++)
            if (!strcmp(f->k[k], m->names[i])) given = true;
        if (given) continue;
        if (m->w && m->w[i]) frame_set(r, f, m->names[i], mnv__jr_eval(r, f, m->w[i]));
        else {
            char *msg = mnv__ja_alloc(r->a, strlen(m->names[i]) + 80);
            sprintf(msg, "parameter '%s' was not provided", m->names[i]);
            frame_set(r, f, m->names[i], mnv__jv_undef(msg));
        }
    }
    varargs.tuple = 1;
    frame_set(r, f, "varargs", varargs);
    frame_set(r, f, "kwargs", kwargs);
    jbuf *saved = r->out;
    jbuf buf = {0};
    r->out = &buf;
    int line = r->line;
    exec_body(r, f, m->b);
    r->out = saved;
    r->line = line;
    r->depth--;
    return mnv__jb_take(r, &buf);
}

jv mnv__jr_call(jrender *r, jframe *f, jv fn, jv *args, int nargs, const char **kwn, jv *kwv, int nkw) {
    (void)f;
    if (fn.t == JV_UNDEF) mnv__jr_fail(r, "%s", fn.uname ? fn.uname : "undefined value is not callable");
    if (fn.t != JV_FUNC) mnv__jr_fail(r, "'%s' object is not callable", mnv__jv_typename(fn));
    jfunc *F = fn.u.fn;
    switch (F->kind) {
    case JF_MACRO: return call_macro(r, F, args, nargs, kwn, kwv, nkw);
    case JF_METHOD: return mnv__jr_method(r, F->self, F->name, args, nargs, kwn, kwv, nkw);
    default: return mnv__jr_global(r, F->name, args, nargs, kwn, kwv, nkw);
    }
}

/* evaluates positional and keyword arguments of a call/filter/test node */
static void eval_args(jrender *r, jframe *f, const jnode *n, jv **args, jv **kwv) {
    *args = n->nv ? mnv__ja_alloc(r->a, (size_t)n->nv * sizeof **args) : NULL;
    *kwv = n->nw ? mnv__ja_alloc(r->a, (size_t)n->nw * sizeof **kwv) : NULL;
    for (int i = 0; i < n->nv; i++) (*args)[i] = mnv__jr_eval(r, f, n->v[i]);
    for (int i = 0; i < n->nw; i++) (*kwv)[i] = mnv__jr_eval(r, f, n->w[i]);
}

/* a filter chain whose innermost input (a NULL ->a) is `text` */
static jv apply_filters(jrender *r, jframe *f, const jnode *chain, jv text) {
    jv in = chain->a ? apply_filters(r, f, chain->a, text) : text;
    jv *args, *kwv;
    eval_args(r, f, chain, &args, &kwv);
    r->line = chain->line;
    return mnv__jr_filter(r, f, chain->s, in, args, chain->nv, chain->names, kwv, chain->nw);
}

static jv eval_name(jrender *r, jframe *f, const jnode *n) {
    jv v;
    if (frame_get(f, n->s, &v)) return v;
    if (mnv__jr_is_global(n->s)) return func_value(r, JF_BUILTIN, n->s);
    char *msg = mnv__ja_alloc(r->a, n->len + 32);
    sprintf(msg, "'%s' is undefined", n->s);
    return mnv__jv_undef(msg);
}

static jv eval_slice(jrender *r, jframe *f, const jnode *n) {
    jv o = mnv__jr_eval(r, f, n->a);
    jv a = n->b ? mnv__jr_eval(r, f, n->b) : mnv__jv_none();
    jv b = n->c ? mnv__jr_eval(r, f, n->c) : mnv__jv_none();
    jv c = n->d ? mnv__jr_eval(r, f, n->d) : mnv__jv_none();
    r->line = n->line;
    if (o.t == JV_UNDEF) mnv__jr_fail(r, "%s", o.uname ? o.uname : "undefined value");
    return do_slice(r, o, a, b, c);
}

static jv eval_sign(jrender *r, jframe *f, const jnode *n) {
    jv v = mnv__jr_eval(r, f, n->a);
    r->line = n->line;
    if (!is_num(v))
        mnv__jr_fail(r, "bad operand type for unary %c: '%s'", n->kind == JN_NEG ? '-' : '+', mnv__jv_typename(v));
    if (n->kind == JN_POS) return v.t == JV_BOOL ? mnv__jv_int(v.u.b) : v;
    if (v.t == JV_FLOAT) return mnv__jv_float(-v.u.f);
    if (as_i(v) == INT64_MIN) mnv__jr_fail(r, "integer overflow in unary -");
    return mnv__jv_int(-as_i(v));
}

/* a < b <= c ...: each pair in turn, as Python chains them */
static jv eval_compare(jrender *r, jframe *f, const jnode *n) {
    jv a = mnv__jr_eval(r, f, n->a);
    for (int i = 0; i < n->nv; i++) {
        jv b = mnv__jr_eval(r, f, n->v[i]);
        r->line = n->line;
        if (!compare(r, n->ops[i], a, b)) return mnv__jv_bool(false);
        a = b;
    }
    return mnv__jv_bool(true);
}

/* [a, b], (a, b), {k: v} */
static jv eval_display(jrender *r, jframe *f, const jnode *n) {
    if (n->kind == JN_DICT) {
        jv d = mnv__jv_dict(r, (size_t)n->nv);
        for (int i = 0; i < n->nv; i++) {
            jv k = mnv__jr_eval(r, f, n->v[i]);
            mnv__jd_set(r, d.u.d, k, mnv__jr_eval(r, f, n->w[i]));
        }
        return d;
    }
    jv l = mnv__jv_list(r, (size_t)n->nv);
    for (int i = 0; i < n->nv; i++) mnv__jl_push(r, l.u.l, mnv__jr_eval(r, f, n->v[i]));
    l.tuple = n->kind == JN_TUPLE;
    return l;
}

jv mnv__jr_eval(jrender *r, jframe *f, const jnode *n) {
    r->line = n->line;
    switch (n->kind) {
    case JN_LIT: return n->lit;
    case JN_NAME: return eval_name(r, f, n);
    case JN_ATTR: {
        jv o = mnv__jr_eval(r, f, n->a);
        r->line = n->line;
        return mnv__jr_getattr(r, o, n->s, n->len);
    }
    case JN_ITEM: {
        jv o = mnv__jr_eval(r, f, n->a);
        jv k = mnv__jr_eval(r, f, n->b);
        r->line = n->line;
        return mnv__jr_getitem(r, o, k);
    }
    case JN_SLICE: return eval_slice(r, f, n);
    case JN_CALL: {
        jv fn = mnv__jr_eval(r, f, n->a);
        jv *args, *kwv;
        eval_args(r, f, n, &args, &kwv);
        r->line = n->line;
        return mnv__jr_call(r, f, fn, args, n->nv, n->names, kwv, n->nw);
    }
    case JN_FILTER: {
        jv in = mnv__jr_eval(r, f, n->a);
        jv *args, *kwv;
        eval_args(r, f, n, &args, &kwv);
        r->line = n->line;
        return mnv__jr_filter(r, f, n->s, in, args, n->nv, n->names, kwv, n->nw);
    }
    case JN_TEST: {
        jv in = mnv__jr_eval(r, f, n->a);
        jv *args, *kwv;
        eval_args(r, f, n, &args, &kwv);
        r->line = n->line;
        bool t = mnv__jr_test(r, f, n->s, in, args, n->nv);
        return mnv__jv_bool(n->op ? !t : t);
    }
    case JN_NEG: case JN_POS: return eval_sign(r, f, n);
    case JN_NOT: return mnv__jv_bool(!mnv__jv_truthy(mnv__jr_eval(r, f, n->a)));
    case JN_AND: {
        jv a = mnv__jr_eval(r, f, n->a);
        return mnv__jv_truthy(a) ? mnv__jr_eval(r, f, n->b) : a;
    }
    case JN_OR: {
        jv a = mnv__jr_eval(r, f, n->a);
        return mnv__jv_truthy(a) ? a : mnv__jr_eval(r, f, n->b);
    }
    case JN_BIN: {
        jv a = mnv__jr_eval(r, f, n->a);
        jv b = mnv__jr_eval(r, f, n->b);
        r->line = n->line;
        return binop(r, n->op, a, b);
    }
    case JN_CMP: return eval_compare(r, f, n);
    case JN_CONCAT: {
        jbuf b = {0};
        for (int i = 0; i < n->nv; i++) {
            jv s = mnv__jv_tostr(r, mnv__jr_eval(r, f, n->v[i]));
            mnv__jb_put(r, &b, s.u.s.p, s.u.s.n);
        }
        return mnv__jb_take(r, &b);
    }
    case JN_COND:
        if (mnv__jv_truthy(mnv__jr_eval(r, f, n->a))) return mnv__jr_eval(r, f, n->b);
        return n->c ? mnv__jr_eval(r, f, n->c) : mnv__jv_undef("the conditional expression had no else");
    case JN_LIST: case JN_TUPLE: case JN_DICT: return eval_display(r, f, n);
    default: mnv__jr_fail(r, "a statement used as an expression");
    }
}

/* ---- statements ---- */
enum { FLOW_NORMAL, FLOW_BREAK, FLOW_CONTINUE };

static void assign(jrender *r, jframe *f, const char **names, int nnames, jv v) {
    if (nnames == 1) {
        frame_set(r, f, names[0], v);
        return;
    }
    if (v.t == JV_STR || v.t == JV_DICT) v = (jv){.t = JV_LIST, .u.l = mnv__jr_iter(r, v)};
    if (v.t != JV_LIST) mnv__jr_fail(r, "cannot unpack a '%s' into %d names", mnv__jv_typename(v), nnames);
    if (v.u.l->n != (size_t)nnames)
        mnv__jr_fail(r, "cannot unpack %zu values into %d names", v.u.l->n, nnames);
    for (int i = 0; i < nnames; i++) frame_set(r, f, names[i], v.u.l->v[i]);
}

static int exec_for(jrender *r, jframe *f, const jnode *n) {
    jv seq = mnv__jr_eval(r, f, n->a);
    r->line = n->line;
    jlist *items = mnv__jr_iter(r, seq);
    if (n->d) { /* {% for x in xs if cond %}: the loop sees only the items kept */
        jv kept = mnv__jv_list(r, 0);
        jframe *tf = frame_new(r, f);
        for (size_t i = 0; i < items->n; i++) {
            step(r);
            tf->n = 0;
            assign(r, tf, n->names, n->nnames, items->v[i]);
            if (mnv__jv_truthy(mnv__jr_eval(r, tf, n->d))) mnv__jl_push(r, kept.u.l, items->v[i]);
        }
        items = kept.u.l;
    }
    if (items->n == 0) {
        if (n->c) return exec_body(r, f, n->c);
        return FLOW_NORMAL;
    }
    jloop *L = mnv__ja_alloc(r->a, sizeof *L);
    L->items = items;
    jframe *body = frame_new(r, f);
    for (size_t i = 0; i < items->n; i++) {
        step(r);
        L->i = i;
        body->n = 0;
        frame_set(r, body, "loop", (jv){.t = JV_LOOP, .u.loop = L});
        assign(r, body, n->names, n->nnames, items->v[i]);
        int flow = exec_body(r, body, n->b);
        if (flow == FLOW_BREAK) break;
    }
    return FLOW_NORMAL;
}

static void exec_set(jrender *r, jframe *f, const jnode *n) {
    jv v = mnv__jr_eval(r, f, n->a);
    r->line = n->line;
    if (n->s) { /* ns.attr = v */
        jv ns;
        if (!frame_get(f, n->names[0], &ns) || ns.t != JV_NS)
            mnv__jr_fail(r, "cannot assign attribute '%s' on '%s': not a namespace", n->s, n->names[0]);
        mnv__jd_set(r, ns.u.d, mnv__jv_strz(n->s), v);
        return;
    }
    assign(r, f, n->names, n->nnames, v);
}

static int exec_node(jrender *r, jframe *f, const jnode *n) {
    r->line = n->line;
    switch (n->kind) {
    case JN_TEXT: mnv__jb_put(r, r->out, n->s, n->len); return FLOW_NORMAL;
    case JN_OUT: {
        jv s = mnv__jv_tostr(r, mnv__jr_eval(r, f, n->a));
        mnv__jb_put(r, r->out, s.u.s.p, s.u.s.n);
        return FLOW_NORMAL;
    }
    case JN_IF:
        if (mnv__jv_truthy(mnv__jr_eval(r, f, n->a))) return exec_body(r, f, n->b);
        return n->c ? exec_body(r, f, n->c) : FLOW_NORMAL;
    case JN_FOR: return exec_for(r, f, n);
    case JN_SET: exec_set(r, f, n); return FLOW_NORMAL;
    case JN_SETBLOCK: case JN_FILTERBLOCK: {
        jbuf *saved = r->out;
        jbuf buf = {0};
        r->out = &buf;
        exec_body(r, f, n->b);
        r->out = saved;
        jv text = mnv__jb_take(r, &buf);
        if (n->c) text = apply_filters(r, f, n->c, text);
        if (n->kind == JN_SETBLOCK) frame_set(r, f, n->names[0], text);
        else {
            jv s = mnv__jv_tostr(r, text);
            mnv__jb_put(r, r->out, s.u.s.p, s.u.s.n);
        }
        return FLOW_NORMAL;
    }
    case JN_MACRO: {
        jv fn = func_value(r, JF_MACRO, n->s);
        fn.u.fn->macro = n;
        fn.u.fn->closure = f;
        frame_set(r, f, n->s, fn);
        return FLOW_NORMAL;
    }
    case JN_CALLBLOCK: {
        const jnode *call = n->a;
        jv fn = mnv__jr_eval(r, f, call->a);
        jv *args, *kwv;
        eval_args(r, f, call, &args, &kwv);
        const char **kwn = mnv__ja_alloc(r->a, (size_t)(call->nw + 1) * sizeof *kwn);
        jv *kwv2 = mnv__ja_alloc(r->a, (size_t)(call->nw + 1) * sizeof *kwv2);
        for (int i = 0; i < call->nw; i++) {
            kwn[i] = call->names[i];
            kwv2[i] = kwv[i];
        }
        jv caller = func_value(r, JF_MACRO, "caller");
        caller.u.fn->macro = n;
        caller.u.fn->closure = f;
        kwn[call->nw] = "caller";
        kwv2[call->nw] = caller;
        r->line = n->line;
        jv s = mnv__jv_tostr(r, mnv__jr_call(r, f, fn, args, call->nv, kwn, kwv2, call->nw + 1));
        mnv__jb_put(r, r->out, s.u.s.p, s.u.s.n);
        return FLOW_NORMAL;
    }
    case JN_BREAK: return FLOW_BREAK;
    case JN_CONTINUE: return FLOW_CONTINUE;
    case JN_BODY: return exec_body(r, f, n);
    default: mnv__jv_tostr(r, mnv__jr_eval(r, f, n)); return FLOW_NORMAL;
    }
}

static int exec_body(jrender *r, jframe *f, const jnode *body) {
    if (!body) return FLOW_NORMAL;
    for (int i = 0; i < body->nv; i++) {
        int flow = exec_node(r, f, body->v[i]);
        if (flow != FLOW_NORMAL) return flow;
    }
    return FLOW_NORMAL;
}

mnv_status mnv__jinja_render(const mnv__jinja *t, const cJSON *vars, const mnv__jinja_limits *lim,
                             char **out) {
    *out = NULL;
    jrender *r = calloc(1, sizeof *r);
    jarena *a = calloc(1, sizeof *a);
    if (!r || !a) {
        free(r);
        free(a);
        return mnv_set_error(MNV_ERR_NOMEM, "%s: out of memory", t->name);
    }
    mnv__jinja_limits L = lim ? *lim : (mnv__jinja_limits){0};
    if (!L.max_output) L.max_output = (size_t)16 << 20;
    if (!L.max_memory) L.max_memory = (size_t)256 << 20;
    if (!L.max_depth) L.max_depth = 64;
    if (!L.max_steps) L.max_steps = 10000000;
    r->lim = L;
    r->a = a;
    a->limit = L.max_memory;
    a->fail = &r->jmp;
    a->err = r->err;
    if (setjmp(r->jmp)) {
        mnv_status st = mnv_set_error(MNV_ERR_INVALID_ARG, "%s: %s", t->name, r->err);
        mnv__ja_free(a);
        free(a);
        free(r);
        return st;
    }
    jbuf *outb = mnv__ja_alloc(a, sizeof *outb);
    memset(outb, 0, sizeof *outb);
    r->out = outb;
    jframe *root = frame_new(r, NULL);
    r->globals = root;
    if (vars)
        for (const cJSON *c = vars->child; c; c = c->next)
            if (c->string) {
                char *k = mnv__ja_alloc(a, strlen(c->string) + 1);
                strcpy(k, c->string);
                frame_set(r, root, k, mnv__jv_from_cjson(r, c, 0));
            }
    exec_body(r, root, t->root);
    char *s = malloc(outb->n + 1);
    if (s) {
        if (outb->n) memcpy(s, outb->p, outb->n);
        s[outb->n] = 0;
    }
    mnv__ja_free(a);
    free(a);
    free(r);
    if (!s) return mnv_set_error(MNV_ERR_NOMEM, "%s: out of memory", t->name);
    *out = s;
    return MNV_OK;
}
