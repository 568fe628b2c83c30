/* A Jinja interpreter for the subset chat templates use.
 *
 *   jinja_lex.c       template text -> tokens (whitespace control, trim_blocks,
 *                     lstrip_blocks as transformers sets them)
 *   jinja_parse.c     tokens -> a tree of nodes
 *   jinja_value.c     values: arena, strings, lists, dicts, Python str()/repr(),
 *                     JSON in and out (tojson)
 *   jinja_eval.c      statements and expressions
 *   jinja_builtins.c  filters, tests, methods of strings/dicts/lists, globals
 *
 * Every value of one render lives in one arena freed at the end, so an error
 * anywhere unwinds with longjmp to the render's entry without leaks. Limits
 * (arena bytes, output bytes, call depth, loop iterations) end a render with
 * an error instead of exhausting the host.
 */
#ifndef MNV_CHAT_JINJA_H
#define MNV_CHAT_JINJA_H

#include <cjson/cJSON.h>
#include <setjmp.h>
#include <stdlib.h>

#include "core/core.h"

typedef struct mnv__jinja mnv__jinja;

/* Limits of one render; zero fields take the defaults. */
typedef struct {
    size_t max_output;     /* bytes of rendered text (default 16 MiB) */
    size_t max_memory;     /* bytes of values (default 256 MiB) */
    int max_depth;         /* nested macro calls (default 64) */
    uint64_t max_steps;    /* loop iterations + macro calls (default 10 million) */
} mnv__jinja_limits;

/* Parses src (len bytes, NUL not needed) with transformers' settings
 * (trim_blocks, lstrip_blocks). MNV_ERR_FORMAT with a message naming the
 * line on a syntax error (recorded with mnv_set_error; name prefixes it). */
mnv_status mnv__jinja_parse(const char *name, const char *src, size_t len, mnv__jinja **out);
/* Renders with the keys of vars (a cJSON object, may be NULL) as variables.
 * *out: heap string. MNV_ERR_INVALID_ARG naming the template line on a
 * template error (raise_exception, type errors, limits). lim may be NULL. */
mnv_status mnv__jinja_render(const mnv__jinja *t, const cJSON *vars, const mnv__jinja_limits *lim,
                             char **out);
void mnv__jinja_free(mnv__jinja *t);

/* ================= internals shared by the jinja_*.c files ================= */

/* ---- tokens ---- */
typedef enum {
    JT_EOF, JT_TEXT, JT_VAR_BEGIN, JT_VAR_END, JT_BLOCK_BEGIN, JT_BLOCK_END,
    JT_NAME, JT_STRING, JT_INT, JT_FLOAT, JT_OP
} jtok_kind;

typedef struct {
    jtok_kind kind;
    int line;
    const char *s; /* text, name, string contents (decoded, arena), op chars */
    size_t len;
    int64_t i;
    double f;
} jtok;

/* ---- arena ---- */
typedef struct jblock jblock;
typedef struct {
    jblock *head;
    size_t used, limit;
    jmp_buf *fail; /* where an allocation past the limit jumps (NULL: returns NULL) */
    char *err;     /* message buffer for that jump */
} jarena;

void *mnv__ja_alloc(jarena *a, size_t n);
void mnv__ja_free(jarena *a);

/* ---- values ---- */
typedef enum {
    JV_UNDEF, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STR, JV_LIST, JV_DICT, JV_NS,
    JV_FUNC, JV_LOOP
} jv_type;

typedef struct jlist jlist;
typedef struct jdict jdict;
typedef struct jfunc jfunc;
typedef struct jloop jloop;

typedef struct {
    uint8_t t;
    uint8_t tuple; /* JV_LIST printed as a tuple */
    union {
        bool b;
        int64_t i;
        double f;
        struct { const char *p; size_t n; } s;
        jlist *l;
        jdict *d;     /* JV_DICT, JV_NS */
        jfunc *fn;
        jloop *loop;
    } u;
    const char *uname; /* JV_UNDEF: what was missing, for messages */
} jv;

struct jlist { jv *v; size_t n, cap; };
struct jdict { jv *k; jv *v; size_t n, cap; };

typedef struct jnode jnode;
typedef struct jframe jframe;

typedef enum { JF_BUILTIN, JF_METHOD, JF_MACRO } jfunc_kind;
struct jfunc {
    jfunc_kind kind;
    const char *name;
    jv self;          /* JF_METHOD: the object */
    const jnode *macro;
    jframe *closure;  /* JF_MACRO: the frame it was defined in */
    const jnode *caller_body; /* a caller() made by a call block */
};

struct jloop {
    jlist *items;
    size_t i;
    int depth0;
};

/* ---- nodes ---- */
typedef enum {
    /* expressions */
    JN_LIT, JN_NAME, JN_ATTR, JN_ITEM, JN_SLICE, JN_CALL, JN_FILTER, JN_TEST, JN_NEG, JN_POS,
    JN_NOT, JN_AND, JN_OR, JN_BIN, JN_CMP, JN_CONCAT, JN_COND, JN_LIST, JN_TUPLE, JN_DICT,
    /* statements */
    JN_TEXT, JN_OUT, JN_IF, JN_FOR, JN_SET, JN_SETBLOCK, JN_MACRO, JN_CALLBLOCK, JN_BREAK,
    JN_CONTINUE, JN_FILTERBLOCK, JN_BODY
} jnode_kind;

struct jnode {
    jnode_kind kind;
    int line;
    int op;              /* JN_BIN/JN_CMP operator char code, JN_TEST negation */
    jnode *a, *b, *c, *d;
    jnode **v;           /* args / items / body / compare operands */
    int nv;
    jnode **w;           /* keyword values / else body / dict values */
    int nw;
    const char **names;  /* keyword names / targets / params */
    int nnames;
    const char *s;       /* name, attribute, text */
    size_t len;
    jv lit;
    int *ops;            /* JN_CMP: operators */
};

/* operator codes beyond single chars */
enum { JOP_EQ = 256, JOP_NE, JOP_LE, JOP_GE, JOP_IN, JOP_NOTIN, JOP_FLOORDIV, JOP_POW };

/* ---- the parsed template ---- */
struct mnv__jinja {
    jarena arena;
    jnode *root;
    char *name;
};

/* lexer: all tokens of src into *toks (arena), ending with JT_EOF. Returns
 * false with err filled on a lexical error. */
bool mnv__jinja_lex(jarena *a, const char *src, size_t len, jtok **toks, size_t *n, char *err,
                    size_t errcap);

/* ---- the render state ---- */
typedef struct {
    char *p;
    size_t n, cap;
} jbuf;

typedef struct jrender {
    jarena *a;
    jmp_buf jmp;
    char err[512];
    int line;          /* line of the node being evaluated */
    jbuf *out;         /* current output (call blocks and set blocks swap it) */
    mnv__jinja_limits lim;
    uint64_t steps;
    int depth;
    jframe *globals;
} jrender;

struct jframe {
    jframe *parent;
    const char **k;
    jv *v;
    size_t n, cap;
};

/* errors: record the message and unwind to the render's entry */
_Noreturn void mnv__jr_fail(jrender *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* value constructors and helpers (jinja_value.c) */
jv mnv__jv_undef(const char *name);
jv mnv__jv_none(void);
jv mnv__jv_bool(bool b);
jv mnv__jv_int(int64_t i);
jv mnv__jv_float(double f);
jv mnv__jv_str(jrender *r, const char *s, size_t n); /* copies */
jv mnv__jv_strz(const char *s);                      /* borrows a static string */
jv mnv__jv_list(jrender *r, size_t cap);
jv mnv__jv_dict(jrender *r, size_t cap);
void mnv__jl_push(jrender *r, jlist *l, jv v);
void mnv__jd_set(jrender *r, jdict *d, jv k, jv v);
bool mnv__jd_get(const jdict *d, jv k, jv *out);
bool mnv__jd_gets(const jdict *d, const char *k, jv *out);
bool mnv__jv_truthy(jv v);
bool mnv__jv_eq(jv a, jv b);
int mnv__jv_cmp(jrender *r, jv a, jv b); /* <0, 0, >0; fails on unorderable types */
const char *mnv__jv_typename(jv v);
/* str(v) as Python prints it; repr(v) */
jv mnv__jv_tostr(jrender *r, jv v);
void mnv__jv_repr(jrender *r, jbuf *b, jv v);
/* json.dumps(v, ensure_ascii=False, indent, sort_keys): indent is the text of
 * one level (NULL: no newlines, ", " and ": " separators) */
void mnv__jv_tojson(jrender *r, jbuf *b, jv v, const char *indent, bool sort_keys, int level);
jv mnv__jv_from_cjson(jrender *r, const cJSON *j, int depth);
/* Python repr of a float */
void mnv__jfloat_repr(double f, char *buf, size_t cap);

void mnv__jb_put(jrender *r, jbuf *b, const char *s, size_t n);
void mnv__jb_puts(jrender *r, jbuf *b, const char *s);
jv mnv__jb_take(jrender *r, jbuf *b); /* the buffer's text as a string value */

/* evaluation (jinja_eval.c) */
jv mnv__jr_eval(jrender *r, jframe *f, const jnode *n);
jv mnv__jr_call(jrender *r, jframe *f, jv fn, jv *args, int nargs, const char **kwn, jv *kwv, int nkw);
jv mnv__jr_getattr(jrender *r, jv obj, const char *name, size_t len);
jv mnv__jr_getitem(jrender *r, jv obj, jv key);
jlist *mnv__jr_iter(jrender *r, jv v); /* the items a for loop visits */

/* builtins (jinja_builtins.c) */
jv mnv__jr_filter(jrender *r, jframe *f, const char *name, jv in, jv *args, int nargs,
                  const char **kwn, jv *kwv, int nkw);
bool mnv__jr_test(jrender *r, jframe *f, const char *name, jv in, jv *args, int nargs);
jv mnv__jr_method(jrender *r, jv self, const char *name, jv *args, int nargs, const char **kwn,
                  jv *kwv, int nkw);
bool mnv__jr_has_method(jv self, const char *name);
jv mnv__jr_global(jrender *r, const char *name, jv *args, int nargs, const char **kwn, jv *kwv,
                  int nkw);
bool mnv__jr_is_global(const char *name);
/* "fmt" % args: %s %d %i %r and %% */
jv mnv__jr_percent_format(jrender *r, jv fmt, jv *args, int nargs);

#endif
