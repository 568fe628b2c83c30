/* Jinja parser: tokens to a tree of nodes, with Jinja's precedence:
 *   cond-expr < or < and < not < compare (==, in, ...) < + - < ~ < * / // %
 *   < ** < unary - + < primary with postfixes (.a, [i], (args)), filters (|f)
 *   and tests (is t).
 * A syntax error unwinds with longjmp to mnv__jinja_parse. */
#include <stdarg.h>
#include <stdio.h>

#include "chat/jinja.h"

#define MAX_NEST 200

typedef struct {
    jarena *a;
    jtok *t;
    size_t n, i;
    int nest;
    jmp_buf jmp;
    char err[400];
} parser;

static _Noreturn void p_fail(parser *P, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static _Noreturn void p_fail(parser *P, const char *fmt, ...) {
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(P->err, sizeof P->err, "line %d: %s", P->t[P->i].line, msg);
    longjmp(P->jmp, 1);
}

static void *p_alloc(parser *P, size_t n) {
    void *p = mnv__ja_alloc(P->a, n);
    if (!p) p_fail(P, "template too large");
    memset(p, 0, n);
    return p;
}

static jnode *mk(parser *P, jnode_kind k, int line) {
    jnode *n = p_alloc(P, sizeof *n);
    n->kind = k;
    n->line = line;
    return n;
}

/* growable node list */
typedef struct {
    jnode **v;
    int n, cap;
} nlist;

static void nl_push(parser *P, nlist *l, jnode *x) {
    if (l->n == l->cap) {
        int nc = l->cap ? l->cap * 2 : 4;
        jnode **nv = p_alloc(P, (size_t)nc * sizeof *nv);
        if (l->n) memcpy(nv, l->v, (size_t)l->n * sizeof *nv);
        l->v = nv;
        l->cap = nc;
    }
    l->v[l->n++] = x;
}

typedef struct {
    const char **v;
    int n, cap;
} slist;

static void sl_push(parser *P, slist *l, const char *s) {
    if (l->n == l->cap) {
        int nc = l->cap ? l->cap * 2 : 4;
        const char **nv = p_alloc(P, (size_t)nc * sizeof *nv);
        if (l->n) memcpy(nv, l->v, (size_t)l->n * sizeof *nv);
        l->v = nv;
        l->cap = nc;
    }
    l->v[l->n++] = s;
}

static jtok *cur(parser *P) { return &P->t[P->i]; }
static jtok *peek(parser *P, size_t k) { return &P->t[P->i + k < P->n ? P->i + k : P->n - 1]; }
static void adv(parser *P) {
    if (P->i + 1 < P->n) P->i++;
}
static bool tok_is_op(const jtok *t, const char *op) {
    return t->kind == JT_OP && t->len == strlen(op) && memcmp(t->s, op, t->len) == 0;
}
static bool tok_is_name(const jtok *t, const char *nm) {
    return t->kind == JT_NAME && t->len == strlen(nm) && memcmp(t->s, nm, t->len) == 0;
}
static bool is_op(parser *P, const char *op) { return tok_is_op(cur(P), op); }
static bool is_name(parser *P, const char *nm) { return tok_is_name(cur(P), nm); }
static bool accept_op(parser *P, const char *op) {
    if (!is_op(P, op)) return false;
    adv(P);
    return true;
}
static bool accept_name(parser *P, const char *nm) {
    if (!is_name(P, nm)) return false;
    adv(P);
    return true;
}
static const char *tok_desc(const jtok *t) {
    switch (t->kind) {
    case JT_EOF: return "end of template";
    case JT_TEXT: return "text";
    case JT_VAR_BEGIN: return "'{{'";
    case JT_VAR_END: return "'}}'";
    case JT_BLOCK_BEGIN: return "'{%'";
    case JT_BLOCK_END: return "'%}'";
    case JT_NAME: return "a name";
    case JT_STRING: return "a string";
    case JT_INT: case JT_FLOAT: return "a number";
    default: return "an operator";
    }
}
static void expect_op(parser *P, const char *op) {
    if (!accept_op(P, op)) p_fail(P, "expected '%s', got %s", op, tok_desc(cur(P)));
}
static const char *p_strdup(parser *P, const char *s, size_t n) {
    char *d = p_alloc(P, n + 1);
    memcpy(d, s, n);
    return d;
}
static const char *expect_ident(parser *P) {
    jtok *t = cur(P);
    if (t->kind != JT_NAME) p_fail(P, "expected a name, got %s", tok_desc(t));
    adv(P);
    return p_strdup(P, t->s, t->len);
}
static void expect_block_end(parser *P) {
    if (cur(P)->kind != JT_BLOCK_END) p_fail(P, "expected '%%}', got %s", tok_desc(cur(P)));
    adv(P);
}
static void enter(parser *P) {
    if (++P->nest > MAX_NEST) p_fail(P, "expression nested too deeply");
}

static jnode *parse_expr(parser *P);
static jnode *parse_unary(parser *P, bool with_filter);
static jnode *parse_or(parser *P);

/* (args) after '(' was consumed: positional into v, keywords into names/w */
static void parse_call_args(parser *P, jnode *n) {
    nlist pos = {0}, kwv = {0};
    slist kwn = {0};
    while (!is_op(P, ")")) {
        if (pos.n + kwv.n) expect_op(P, ",");
        if (is_op(P, ")")) break; /* trailing comma */
        if (cur(P)->kind == JT_NAME && tok_is_op(peek(P, 1), "=")) {
            sl_push(P, &kwn, expect_ident(P));
            adv(P);
            nl_push(P, &kwv, parse_expr(P));
        } else {
            if (kwv.n) p_fail(P, "positional argument after a keyword argument");
            nl_push(P, &pos, parse_expr(P));
        }
    }
    adv(P);
    n->v = pos.v;
    n->nv = pos.n;
    n->w = kwv.v;
    n->nw = kwv.n;
    n->names = kwn.v;
    n->nnames = kwn.n;
}

static jnode *lit(parser *P, int line, jv v) {
    jnode *n = mk(P, JN_LIT, line);
    n->lit = v;
    return n;
}

static jnode *parse_primary(parser *P) {
    jtok *t = cur(P);
    int line = t->line;
    enter(P);
    jnode *n;
    if (t->kind == JT_NAME) {
        adv(P);
        if (tok_is_name(t, "true") || tok_is_name(t, "True")) n = lit(P, line, mnv__jv_bool(true));
        else if (tok_is_name(t, "false") || tok_is_name(t, "False")) n = lit(P, line, mnv__jv_bool(false));
        else if (tok_is_name(t, "none") || tok_is_name(t, "None")) n = lit(P, line, mnv__jv_none());
        else {
            n = mk(P, JN_NAME, line);
            n->s = p_strdup(P, t->s, t->len);
            n->len = t->len;
        }
    } else if (t->kind == JT_STRING) {
        size_t total = 0, k = P->i;
        while (P->t[k].kind == JT_STRING) total += P->t[k++].len;
        char *s = p_alloc(P, total + 1);
        size_t o = 0;
        while (cur(P)->kind == JT_STRING) {
            memcpy(s + o, cur(P)->s, cur(P)->len);
            o += cur(P)->len;
            adv(P);
        }
        jv v = mnv__jv_strz(s);
        v.u.s.n = total;
        n = lit(P, line, v);
    } else if (t->kind == JT_INT) {
        adv(P);
        n = lit(P, line, mnv__jv_int(t->i));
    } else if (t->kind == JT_FLOAT) {
        adv(P);
        n = lit(P, line, mnv__jv_float(t->f));
    } else if (tok_is_op(t, "(")) {
        adv(P);
        if (accept_op(P, ")")) {
            n = mk(P, JN_TUPLE, line);
        } else {
            n = parse_expr(P);
            if (is_op(P, ",")) {
                nlist items = {0};
                nl_push(P, &items, n);
                while (accept_op(P, ",")) {
                    if (is_op(P, ")")) break;
                    nl_push(P, &items, parse_expr(P));
                }
                n = mk(P, JN_TUPLE, line);
                n->v = items.v;
                n->nv = items.n;
            }
            expect_op(P, ")");
        }
    } else if (tok_is_op(t, "[")) {
        adv(P);
        nlist items = {0};
        while (!is_op(P, "]")) {
            if (items.n) expect_op(P, ",");
            if (is_op(P, "]")) break;
            nl_push(P, &items, parse_expr(P));
        }
        adv(P);
        n = mk(P, JN_LIST, line);
        n->v = items.v;
        n->nv = items.n;
    } else if (tok_is_op(t, "{")) {
        adv(P);
        nlist keys = {0}, vals = {0};
        while (!is_op(P, "}")) {
            if (keys.n) expect_op(P, ",");
            if (is_op(P, "}")) break;
            nl_push(P, &keys, parse_expr(P));
            expect_op(P, ":");
            nl_push(P, &vals, parse_expr(P));
        }
        adv(P);
        n = mk(P, JN_DICT, line);
        n->v = keys.v;
        n->nv = keys.n;
        n->w = vals.v;
        n->nw = vals.n;
    } else {
        p_fail(P, "unexpected %s", tok_desc(t));
    }
    P->nest--;
    return n;
}

static jnode *parse_subscript(parser *P, jnode *obj, int line) {
    jnode *idx[3] = {NULL, NULL, NULL};
    int part = 0;
    bool slice = false;
    while (!is_op(P, "]")) {
        if (accept_op(P, ":")) {
            slice = true;
            if (++part > 2) p_fail(P, "too many ':' in a subscript");
            continue;
        }
        if (idx[part]) p_fail(P, "expected ']'");
        idx[part] = parse_expr(P);
    }
    adv(P);
    jnode *n;
    if (slice) {
        n = mk(P, JN_SLICE, line);
        n->b = idx[0];
        n->c = idx[1];
        n->d = idx[2];
    } else {
        if (!idx[0]) p_fail(P, "empty subscript");
        n = mk(P, JN_ITEM, line);
        n->b = idx[0];
    }
    n->a = obj;
    return n;
}

static jnode *parse_postfix(parser *P, jnode *n) {
    for (;;) {
        int line = cur(P)->line;
        if (accept_op(P, ".")) {
            jtok *t = cur(P);
            if (t->kind == JT_INT) {
                adv(P);
                jnode *m = mk(P, JN_ITEM, line);
                m->a = n;
                m->b = lit(P, line, mnv__jv_int(t->i));
                n = m;
            } else {
                jnode *m = mk(P, JN_ATTR, line);
                m->a = n;
                m->s = expect_ident(P);
                m->len = strlen(m->s);
                n = m;
            }
        } else if (accept_op(P, "[")) {
            n = parse_subscript(P, n, line);
        } else if (accept_op(P, "(")) {
            jnode *m = mk(P, JN_CALL, line);
            m->a = n;
            parse_call_args(P, m);
            n = m;
        } else {
            return n;
        }
    }
}

static const char *parse_dotted_name(parser *P) {
    const char *s = expect_ident(P);
    while (is_op(P, ".") && peek(P, 1)->kind == JT_NAME) {
        adv(P);
        const char *t = expect_ident(P);
        size_t a = strlen(s), b = strlen(t);
        char *d = p_alloc(P, a + b + 2);
        memcpy(d, s, a);
        d[a] = '.';
        memcpy(d + a + 1, t, b);
        s = d;
    }
    return s;
}

static jnode *parse_filter(parser *P, jnode *in, int line) {
    jnode *f = mk(P, JN_FILTER, line);
    f->a = in;
    f->s = parse_dotted_name(P);
    if (accept_op(P, "(")) parse_call_args(P, f);
    return f;
}

static jnode *parse_filter_expr(parser *P, jnode *n) {
    for (;;) {
        int line = cur(P)->line;
        if (accept_op(P, "|")) {
            n = parse_filter(P, n, line);
        } else if (is_name(P, "is")) {
            adv(P);
            jnode *t = mk(P, JN_TEST, line);
            t->op = accept_name(P, "not");
            t->a = n;
            t->s = parse_dotted_name(P);
            jtok *c = cur(P);
            if (accept_op(P, "(")) {
                parse_call_args(P, t);
            } else if ((c->kind == JT_NAME || c->kind == JT_STRING || c->kind == JT_INT ||
                        c->kind == JT_FLOAT || tok_is_op(c, "[") || tok_is_op(c, "{")) &&
                       !tok_is_name(c, "else") && !tok_is_name(c, "or") && !tok_is_name(c, "and")) {
                if (tok_is_name(c, "is")) p_fail(P, "cannot chain tests with 'is'");
                t->v = p_alloc(P, sizeof *t->v);
                t->v[0] = parse_postfix(P, parse_primary(P));
                t->nv = 1;
            }
            n = t;
        } else {
            return n;
        }
    }
}

static jnode *parse_unary(parser *P, bool with_filter) {
    int line = cur(P)->line;
    enter(P);
    jnode *n;
    if (accept_op(P, "-")) {
        n = mk(P, JN_NEG, line);
        n->a = parse_unary(P, false);
    } else if (accept_op(P, "+")) {
        n = mk(P, JN_POS, line);
        n->a = parse_unary(P, false);
    } else {
        n = parse_primary(P);
    }
    n = parse_postfix(P, n);
    if (with_filter) n = parse_filter_expr(P, n);
    P->nest--;
    return n;
}

/* ---- binary operators: one loop over a table of precedence levels ----
 * Each level reads operands of the next level joined by its operators:
 * left-associative nodes (a + b + c is (a + b) + c), one JN_CMP chain
 * (a < b < c, each operand evaluated once), or one JN_CONCAT list. "not" is a
 * prefix between "and" and the comparisons. */
typedef struct {
    const char *tok; /* an operator, or a name when word */
    bool word;       /* "and", "or", "in", "not in" */
    int op;          /* JN_BIN/JN_CMP operator (0 for and, or, ~) */
} binop;

typedef enum { FOLD_LEFT, FOLD_CHAIN, FOLD_LIST } fold;

typedef struct {
    fold how;
    jnode_kind kind;
    binop ops[9]; /* ended by an entry without tok */
} oplevel;

enum { LV_OR, LV_AND, LV_NOT, LV_CMP, LV_COUNT = 8 };

static const oplevel levels[LV_COUNT] = {
    [LV_OR] = {FOLD_LEFT, JN_OR, {{"or", true, 0}}},
    [LV_AND] = {FOLD_LEFT, JN_AND, {{"and", true, 0}}},
    [LV_CMP] = {FOLD_CHAIN, JN_CMP,
                {{"==", false, JOP_EQ}, {"!=", false, JOP_NE}, {"<", false, '<'}, {">", false, '>'},
                 {"<=", false, JOP_LE}, {">=", false, JOP_GE}, {"in", true, JOP_IN}, {"not", true, JOP_NOTIN}}},
    {FOLD_LEFT, JN_BIN, {{"+", false, '+'}, {"-", false, '-'}}},
    {FOLD_LIST, JN_CONCAT, {{"~", false, 0}}},
    {FOLD_LEFT, JN_BIN, {{"*", false, '*'}, {"/", false, '/'}, {"//", false, JOP_FLOORDIV}, {"%", false, '%'}}},
    {FOLD_LEFT, JN_BIN, {{"**", false, JOP_POW}}},
};

/* The operator of level lv at the current token, consumed (NULL if none). */
static const binop *accept_binop(parser *P, int lv) {
    for (const binop *o = levels[lv].ops; o->tok; o++) {
        if (!(o->word ? is_name(P, o->tok) : is_op(P, o->tok))) continue;
        if (o->op == JOP_NOTIN) {
            if (!tok_is_name(peek(P, 1), "in")) continue;
            adv(P);
        }
        adv(P);
        return o;
    }
    return NULL;
}

static jnode *parse_level(parser *P, int lv);

static jnode *parse_not(parser *P) {
    int line = cur(P)->line;
    if (accept_name(P, "not")) {
        enter(P);
        jnode *n = mk(P, JN_NOT, line);
        n->a = parse_not(P);
        P->nest--;
        return n;
    }
    return parse_level(P, LV_NOT + 1);
}

/* The rest of a JN_CMP chain or a JN_CONCAT list after its first operand
 * and first operator o (a frame of its own: it holds the chain's operators). */
static jnode *parse_nary(parser *P, int lv, jnode *first, const binop *o, int line) {
    const oplevel *L = &levels[lv];
    nlist operands = {0};
    int ops[64], nops = 0;
    if (L->how == FOLD_LIST) nl_push(P, &operands, first);
    do {
        if (L->how == FOLD_CHAIN) {
            if (nops == 64) p_fail(P, "comparison chain too long");
            ops[nops++] = o->op;
        }
        nl_push(P, &operands, parse_level(P, lv + 1));
    } while ((o = accept_binop(P, lv)));
    jnode *n = mk(P, L->kind, line);
    n->v = operands.v;
    n->nv = operands.n;
    if (L->how == FOLD_CHAIN) {
        n->a = first;
        n->ops = p_alloc(P, (size_t)nops * sizeof *n->ops);
        memcpy(n->ops, ops, (size_t)nops * sizeof *ops);
    }
    return n;
}

static jnode *parse_level(parser *P, int lv) {
    if (lv == LV_NOT) return parse_not(P);
    if (lv == LV_COUNT) return parse_unary(P, true);
    const oplevel *L = &levels[lv];
    int line = cur(P)->line; /* a chain's line is its first operand's */
    jnode *n = parse_level(P, lv + 1);
    for (;;) {
        int op_line = cur(P)->line; /* a node's line is its operator's */
        const binop *o = accept_binop(P, lv);
        if (!o) return n;
        if (L->how != FOLD_LEFT) return parse_nary(P, lv, n, o, L->how == FOLD_CHAIN ? line : op_line);
        jnode *m = mk(P, L->kind, op_line);
        m->op = o->op;
        m->a = n;
        m->b = parse_level(P, lv + 1);
        n = m;
    }
}

static jnode *parse_or(parser *P) { return parse_level(P, LV_OR); }

static jnode *parse_expr(parser *P) {
    enter(P);
    jnode *n = parse_or(P);
    while (is_name(P, "if")) {
        int line = cur(P)->line;
        adv(P);
        jnode *c = mk(P, JN_COND, line);
        c->b = n;
        c->a = parse_or(P);
        if (accept_name(P, "else")) c->c = parse_expr(P);
        n = c;
    }
    P->nest--;
    return n;
}

/* an expression, or a tuple of them without parentheses (a, b); without
 * condexpr, an unparenthesized "a if b else c" is not taken (as Jinja parses
 * the test of an if) */
static jnode *parse_tuple_ex(parser *P, bool condexpr) {
    int line = cur(P)->line;
    jnode *n = condexpr ? parse_expr(P) : parse_or(P);
    if (!is_op(P, ",")) return n;
    nlist items = {0};
    nl_push(P, &items, n);
    while (accept_op(P, ",")) {
        if (cur(P)->kind == JT_BLOCK_END || cur(P)->kind == JT_VAR_END) break;
        nl_push(P, &items, condexpr ? parse_expr(P) : parse_or(P));
    }
    jnode *t = mk(P, JN_TUPLE, line);
    t->v = items.v;
    t->nv = items.n;
    return t;
}

static jnode *parse_tuple(parser *P) { return parse_tuple_ex(P, true); }

/* ---- statements ---- */

static jnode *parse_body(parser *P, const char *const *ends, const char **which);

static bool at_end_tag(parser *P, const char *const *ends, const char **which) {
    if (cur(P)->kind != JT_BLOCK_BEGIN) return false;
    jtok *k = peek(P, 1);
    for (int i = 0; ends && ends[i]; i++)
        if (tok_is_name(k, ends[i])) {
            *which = ends[i];
            return true;
        }
    return false;
}

/* names of "a" or "a, b" (assignment / loop targets) */
static void parse_targets(parser *P, jnode *n) {
    slist names = {0};
    bool paren = accept_op(P, "(");
    do {
        sl_push(P, &names, expect_ident(P));
    } while (accept_op(P, ","));
    if (paren) expect_op(P, ")");
    n->names = names.v;
    n->nnames = names.n;
}

static jnode *parse_if(parser *P, int line) {
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    jnode *n = mk(P, JN_IF, line);
    n->a = parse_tuple_ex(P, false);
    expect_block_end(P);
    const char *which = NULL;
    n->b = parse_body(P, ends, &which);
    int eline = cur(P)->line;
    adv(P); /* {% */
    adv(P); /* keyword */
    if (strcmp(which, "elif") == 0) {
        jnode *body = mk(P, JN_BODY, eline);
        body->v = p_alloc(P, sizeof *body->v);
        body->v[0] = parse_if(P, eline);
        body->nv = 1;
        n->c = body;
        return n;
    }
    if (strcmp(which, "else") == 0) {
        static const char *const ends2[] = {"endif", NULL};
        expect_block_end(P);
        n->c = parse_body(P, ends2, &which);
        adv(P);
        adv(P);
    }
    expect_block_end(P);
    return n;
}

static jnode *parse_for(parser *P, int line) {
    static const char *const ends[] = {"else", "endfor", NULL};
    jnode *n = mk(P, JN_FOR, line);
    parse_targets(P, n);
    if (!accept_name(P, "in")) p_fail(P, "expected 'in' in a for loop");
    /* the iterable: no conditional expression (an 'if' filters the loop) */
    jnode *it = parse_or(P);
    if (is_op(P, ",")) {
        nlist items = {0};
        nl_push(P, &items, it);
        while (accept_op(P, ",")) nl_push(P, &items, parse_or(P));
        it = mk(P, JN_TUPLE, line);
        it->v = items.v;
        it->nv = items.n;
    }
    n->a = it;
    if (accept_name(P, "if")) n->d = parse_expr(P);
    if (is_name(P, "recursive")) p_fail(P, "recursive loops are not supported");
    expect_block_end(P);
    const char *which = NULL;
    n->b = parse_body(P, ends, &which);
    adv(P);
    adv(P);
    if (strcmp(which, "else") == 0) {
        static const char *const ends2[] = {"endfor", NULL};
        expect_block_end(P);
        n->c = parse_body(P, ends2, &which);
        adv(P);
        adv(P);
    }
    expect_block_end(P);
    return n;
}

static jnode *parse_set(parser *P, int line) {
    jnode *n = mk(P, JN_SET, line);
    const char *first = expect_ident(P);
    if (is_op(P, ".")) { /* ns.attr = value */
        adv(P);
        n->s = expect_ident(P);
        slist names = {0};
        sl_push(P, &names, first);
        n->names = names.v;
        n->nnames = 1;
        expect_op(P, "=");
        n->a = parse_tuple(P);
        expect_block_end(P);
        return n;
    }
    slist names = {0};
    sl_push(P, &names, first);
    while (accept_op(P, ",")) sl_push(P, &names, expect_ident(P));
    n->names = names.v;
    n->nnames = names.n;
    if (accept_op(P, "=")) {
        n->a = parse_tuple(P);
        expect_block_end(P);
        return n;
    }
    if (names.n != 1) p_fail(P, "a block set assigns one name");
    n->kind = JN_SETBLOCK;
    /* optional filters applied to the block's text: the chain's innermost
     * input (a NULL ->a) is the text */
    jnode *chain = NULL;
    while (accept_op(P, "|")) chain = parse_filter(P, chain, line);
    n->c = chain;
    expect_block_end(P);
    static const char *const ends[] = {"endset", NULL};
    const char *which;
    n->b = parse_body(P, ends, &which);
    adv(P);
    adv(P);
    expect_block_end(P);
    return n;
}

/* (a, b=default, ...) of a macro or a call block's caller */
static void parse_params(parser *P, jnode *n) {
    slist names = {0};
    nlist defs = {0};
    expect_op(P, "(");
    while (!is_op(P, ")")) {
        if (names.n) expect_op(P, ",");
        if (is_op(P, ")")) break;
        sl_push(P, &names, expect_ident(P));
        nl_push(P, &defs, accept_op(P, "=") ? parse_expr(P) : NULL);
    }
    adv(P);
    n->names = names.v;
    n->nnames = names.n;
    n->w = defs.v;
    n->nw = defs.n;
}

static jnode *parse_macro(parser *P, int line) {
    static const char *const ends[] = {"endmacro", NULL};
    jnode *n = mk(P, JN_MACRO, line);
    n->s = expect_ident(P);
    parse_params(P, n);
    expect_block_end(P);
    const char *which;
    n->b = parse_body(P, ends, &which);
    adv(P);
    adv(P);
    if (cur(P)->kind == JT_NAME) adv(P); /* {% endmacro name %} */
    expect_block_end(P);
    return n;
}

static jnode *parse_callblock(parser *P, int line) {
    static const char *const ends[] = {"endcall", NULL};
    jnode *n = mk(P, JN_CALLBLOCK, line);
    if (is_op(P, "(")) parse_params(P, n);
    n->a = parse_expr(P);
    if (n->a->kind != JN_CALL) p_fail(P, "expected a call after 'call'");
    expect_block_end(P);
    const char *which;
    n->b = parse_body(P, ends, &which);
    adv(P);
    adv(P);
    expect_block_end(P);
    return n;
}

static jnode *parse_filterblock(parser *P, int line) {
    static const char *const ends[] = {"endfilter", NULL};
    jnode *n = mk(P, JN_FILTERBLOCK, line);
    jnode *chain = parse_filter(P, NULL, line);
    while (accept_op(P, "|")) chain = parse_filter(P, chain, line);
    n->c = chain;
    expect_block_end(P);
    const char *which;
    n->b = parse_body(P, ends, &which);
    adv(P);
    adv(P);
    expect_block_end(P);
    return n;
}

static jnode *parse_statement(parser *P) {
    int line = cur(P)->line;
    adv(P); /* {% */
    jtok *k = cur(P);
    if (k->kind != JT_NAME) p_fail(P, "expected a statement name, got %s", tok_desc(k));
    adv(P);
    if (tok_is_name(k, "if")) return parse_if(P, line);
    if (tok_is_name(k, "for")) return parse_for(P, line);
    if (tok_is_name(k, "set")) return parse_set(P, line);
    if (tok_is_name(k, "macro")) return parse_macro(P, line);
    if (tok_is_name(k, "call")) return parse_callblock(P, line);
    if (tok_is_name(k, "filter")) return parse_filterblock(P, line);
    if (tok_is_name(k, "break") || tok_is_name(k, "continue")) {
        jnode *n = mk(P, tok_is_name(k, "break") ? JN_BREAK : JN_CONTINUE, line);
        expect_block_end(P);
        return n;
    }
    if (tok_is_name(k, "generation")) { /* transformers' assistant-mask marker */
        static const char *const ends[] = {"endgeneration", NULL};
        expect_block_end(P);
        const char *which;
        jnode *b = parse_body(P, ends, &which);
        adv(P);
        adv(P);
        expect_block_end(P);
        return b;
    }
    P->i--;
    p_fail(P, "unknown or unexpected statement '%.*s'", (int)k->len, k->s);
}

static jnode *parse_body(parser *P, const char *const *ends, const char **which) {
    nlist body = {0};
    jnode *n = mk(P, JN_BODY, cur(P)->line);
    enter(P);
    for (;;) {
        jtok *t = cur(P);
        if (t->kind == JT_EOF) {
            if (ends) {
                int last = 0;
                while (ends[last + 1]) last++;
                p_fail(P, "unexpected end of template, expected '%s'", ends[last]);
            }
            break;
        }
        if (at_end_tag(P, ends, which)) break;
        if (t->kind == JT_TEXT) {
            jnode *x = mk(P, JN_TEXT, t->line);
            x->s = t->s;
            x->len = t->len;
            nl_push(P, &body, x);
            adv(P);
        } else if (t->kind == JT_VAR_BEGIN) {
            adv(P);
            jnode *x = mk(P, JN_OUT, t->line);
            x->a = parse_tuple(P);
            if (cur(P)->kind != JT_VAR_END) p_fail(P, "expected '}}', got %s", tok_desc(cur(P)));
            adv(P);
            nl_push(P, &body, x);
        } else if (t->kind == JT_BLOCK_BEGIN) {
            nl_push(P, &body, parse_statement(P));
        } else {
            p_fail(P, "unexpected %s", tok_desc(t));
        }
    }
    P->nest--;
    n->v = body.v;
    n->nv = body.n;
    return n;
}

mnv_status mnv__jinja_parse(const char *name, const char *src, size_t len, mnv__jinja **out) {
    *out = NULL;
    mnv__jinja *t = calloc(1, sizeof *t);
    if (!t) return mnv_set_error(MNV_ERR_NOMEM, "%s: out of memory", name);
    t->arena.limit = (size_t)64 << 20;
    t->name = mnv_strdup(name ? name : "template");
    parser *P = calloc(1, sizeof *P);
    if (!P || !t->name) {
        free(P);
        mnv__jinja_free(t);
        return mnv_set_error(MNV_ERR_NOMEM, "%s: out of memory", name);
    }
    P->a = &t->arena;
    if (!mnv__jinja_lex(&t->arena, src, len, &P->t, &P->n, P->err, sizeof P->err)) {
        mnv_status st = mnv_set_error(MNV_ERR_FORMAT, "%s: %s", t->name, P->err);
        free(P);
        mnv__jinja_free(t);
        return st;
    }
    if (setjmp(P->jmp)) {
        mnv_status st = mnv_set_error(MNV_ERR_FORMAT, "%s: %s", t->name, P->err);
        free(P);
        mnv__jinja_free(t);
        return st;
    }
    t->root = parse_body(P, NULL, NULL);
    free(P);
    *out = t;
    return MNV_OK;
}

void mnv__jinja_free(mnv__jinja *t) {
    if (!t) return;
    mnv__ja_free(&t->arena);
    free(t->name);
    free(t);
}
