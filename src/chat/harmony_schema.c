/* Tool namespaces of the Harmony format: a JSON schema becomes the
 * TypeScript-like type the reference renderer writes (openai/harmony
 * src/encoding.rs, json_schema_to_typescript and template_tools_section),
 * e.g.
 *
 *   // Gets the current weather in the provided location.
 *   type get_current_weather = (_: {
 *   // The city and state, e.g. San Francisco, CA
 *   location: string,
 *   format?: "celsius" | "fahrenheit", // default: celsius
 *   }) => any;
 *
 * The rules (which keys become comments, where a default is quoted, how
 * oneOf and nullable are spelled) follow the reference case by case, since
 * the model was trained on exactly that text. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "chat/harmony.h"

/* ---- buffer ------------------------------------------------------------------ */

void mnv__hm_put(mnv__hm_buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = MNV_MAX(b->cap * 2, b->len + n + 64);
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void mnv__hm_puts(mnv__hm_buf *b, const char *s) {
    if (s) mnv__hm_put(b, s, strlen(s));
}

void mnv__hm_putc(mnv__hm_buf *b, char c) { mnv__hm_put(b, &c, 1); }

void mnv__hm_free(mnv__hm_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

void mnv__hm_lines(const char *s, void (*fn)(void *ctx, const char *line, size_t n), void *ctx) {
    if (!s) return;
    while (*s) {
        const char *nl = strchr(s, '\n');
        size_t n = nl ? (size_t)(nl - s) : strlen(s);
        size_t k = n;
        if (nl && k > 0 && s[k - 1] == '\r') k--;
        fn(ctx, s, k);
        if (!nl) break;
        s = nl + 1;
    }
}

/* ---- JSON helpers ------------------------------------------------------------ */

static const cJSON *get(const cJSON *o, const char *key) {
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
}

static const char *get_str(const cJSON *o, const char *key) {
    const cJSON *v = get(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool is_enum(const cJSON *s) {
    const cJSON *e = get(s, "enum");
    return cJSON_IsArray(e) && cJSON_GetArraySize(e) > 0;
}

static bool is_nullable(const cJSON *s) { return cJSON_IsTrue(get(s, "nullable")); }

/* A JSON number as serde_json displays it: integers as digits, other values
 * in their shortest round-trip form without a "+" or leading zeros in the
 * exponent. (An integral value written 10.0 in the schema prints as 10.) */
static void put_number(mnv__hm_buf *b, double v) {
    char tmp[64];
    if (!isfinite(v)) {
        mnv__hm_puts(b, "null");
        return;
    }
    if (v == floor(v) && fabs(v) < 1e17) {
        snprintf(tmp, sizeof tmp, "%.0f", v);
        mnv__hm_puts(b, tmp);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        if (strtod(tmp, NULL) == v) break;
    }
    char *e = strchr(tmp, 'e');
    if (!e) {
        mnv__hm_puts(b, tmp);
        return;
    }
    mnv__hm_put(b, tmp, (size_t)(e - tmp) + 1);
    const char *x = e + 1;
    if (*x == '+') x++;
    else if (*x == '-') mnv__hm_putc(b, *x++);
    while (*x == '0' && x[1]) x++;
    mnv__hm_puts(b, x);
}

/* serde_json's Display of a value (compact JSON). */
static void put_json(mnv__hm_buf *b, const cJSON *v) {
    if (cJSON_IsNumber(v)) {
        put_number(b, v->valuedouble);
        return;
    }
    char *s = cJSON_PrintUnformatted(v);
    if (!s) {
        b->oom = true;
        return;
    }
    mnv__hm_puts(b, s);
    cJSON_free(s);
}

/* The three spellings of a default: "text" for a string of a non-enum
 * schema, text for a string of an enum, JSON otherwise. */
static void put_default(mnv__hm_buf *b, const cJSON *schema, const cJSON *def, bool enum_bare) {
    if (cJSON_IsString(def) && !is_enum(schema)) {
        mnv__hm_putc(b, '"');
        mnv__hm_puts(b, def->valuestring);
        mnv__hm_putc(b, '"');
    } else if (cJSON_IsString(def) && enum_bare) {
        mnv__hm_puts(b, def->valuestring);
    } else {
        put_json(b, def);
    }
}

static char *indent_plus(const char *indent, size_t extra) {
    size_t n = strlen(indent);
    char *s = malloc(n + extra + 1);
    if (!s) return NULL;
    memcpy(s, indent, n);
    memset(s + n, ' ', extra);
    s[n + extra] = 0;
    return s;
}

static void ts(const cJSON *s, const char *indent, mnv__hm_buf *out);

/* ts(variant) with " | null" for a nullable variant whose type lacks null. */
static void ts_nullable(const cJSON *v, const char *indent, mnv__hm_buf *out) {
    mnv__hm_buf t = {0};
    ts(v, indent, &t);
    mnv__hm_put(out, t.p ? t.p : "", t.len);
    if (is_nullable(v) && !(t.p && strstr(t.p, "null"))) mnv__hm_puts(out, " | null");
    if (t.oom) out->oom = true;
    mnv__hm_free(&t);
}

/* " // a b" from the pieces collected in c (nothing when empty). */
static void put_trailing(mnv__hm_buf *out, const mnv__hm_buf *c) {
    if (!c->len) return;
    mnv__hm_puts(out, " // ");
    mnv__hm_put(out, c->p, c->len);
}

static void add_piece(mnv__hm_buf *c, const char *s) {
    if (c->len) mnv__hm_putc(c, ' ');
    mnv__hm_puts(c, s);
}

/* A schema whose top level is a oneOf: "\n{indent} | A // desc\n{indent} | B". */
static void ts_one_of(const cJSON *arr, const char *indent, mnv__hm_buf *out) {
    char *sub = indent_plus(indent, 3);
    if (!sub) {
        out->oom = true;
        return;
    }
    const cJSON *v;
    cJSON_ArrayForEach(v, arr) {
        mnv__hm_putc(out, '\n');
        mnv__hm_puts(out, indent);
        mnv__hm_puts(out, " | ");
        ts_nullable(v, sub, out);
        mnv__hm_buf c = {0};
        const char *d = get_str(v, "description");
        if (d) add_piece(&c, d);
        const cJSON *def = get(v, "default");
        if (def) {
            add_piece(&c, "default: ");
            put_default(&c, v, def, false);
        }
        put_trailing(out, &c);
        if (c.oom) out->oom = true;
        mnv__hm_free(&c);
    }
    free(sub);
}

/* A property whose schema is a oneOf: comments above, then one variant a line. */
static void ts_prop_one_of(const char *key, bool required, const cJSON *val, const cJSON *arr,
                           const char *indent, mnv__hm_buf *out) {
    const char *pdesc = get_str(val, "description");
    const cJSON *first = cJSON_GetArrayItem(arr, 0);
    const char *fdesc = first ? get_str(first, "description") : NULL;
    bool above = false;
    if (pdesc && !(fdesc && strcmp(pdesc, fdesc) == 0)) {
        mnv__hm_puts(out, indent);
        mnv__hm_puts(out, "// ");
        mnv__hm_puts(out, pdesc);
        mnv__hm_putc(out, '\n');
        above = true;
    }
    const cJSON *def = get(val, "default");
    if (def) {
        mnv__hm_puts(out, indent);
        mnv__hm_puts(out, "// default: ");
        put_default(out, val, def, true);
        mnv__hm_putc(out, '\n');
    }
    mnv__hm_puts(out, indent);
    mnv__hm_puts(out, key);
    mnv__hm_puts(out, required ? ":\n" : "?:\n");
    char *sub = indent_plus(indent, 3);
    if (!sub) {
        out->oom = true;
        return;
    }
    int i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, arr) {
        mnv__hm_puts(out, indent);
        mnv__hm_puts(out, " | ");
        ts_nullable(v, sub, out);
        mnv__hm_buf c = {0};
        const char *d = get_str(v, "description");
        if (!(i == 0 && above) && d && !(pdesc && strcmp(d, pdesc) == 0)) add_piece(&c, d);
        const cJSON *vdef = get(v, "default");
        if (vdef) {
            add_piece(&c, "default: ");
            put_default(&c, v, vdef, true);
        }
        put_trailing(out, &c);
        if (c.oom) out->oom = true;
        mnv__hm_free(&c);
        mnv__hm_putc(out, '\n');
        i++;
    }
    free(sub);
    mnv__hm_puts(out, indent);
    mnv__hm_puts(out, ",\n");
}

static bool in_required(const cJSON *req, const char *key) {
    const cJSON *r;
    if (!cJSON_IsArray(req)) return false;
    cJSON_ArrayForEach(r, req) {
        if (cJSON_IsString(r) && strcmp(r->valuestring, key) == 0) return true;
    }
    return false;
}

static void comment_line(mnv__hm_buf *out, const char *indent, const char *text) {
    mnv__hm_puts(out, indent);
    mnv__hm_puts(out, "// ");
    mnv__hm_puts(out, text);
    mnv__hm_putc(out, '\n');
}

/* One property of an object: its comments, then "key?: type," and a default. */
static void ts_property(const cJSON *val, bool required, const char *indent, mnv__hm_buf *out) {
    const char *key = val->string;
    const char *title = get_str(val, "title");
    if (title) {
        comment_line(out, indent, title);
        mnv__hm_puts(out, indent);
        mnv__hm_puts(out, "//\n");
    }
    const cJSON *one_of = get(val, "oneOf");
    const char *desc = get_str(val, "description");
    if (!one_of && desc) comment_line(out, indent, desc);
    const cJSON *ex = get(val, "examples"), *e;
    if (cJSON_IsArray(ex) && cJSON_GetArraySize(ex) > 0) {
        comment_line(out, indent, "Examples:");
        cJSON_ArrayForEach(e, ex) {
            if (!cJSON_IsString(e)) continue;
            mnv__hm_puts(out, indent);
            mnv__hm_puts(out, "// - \"");
            mnv__hm_puts(out, e->valuestring);
            mnv__hm_puts(out, "\"\n");
        }
    }
    if (cJSON_IsArray(one_of)) {
        ts_prop_one_of(key, required, val, one_of, indent, out);
        return;
    }
    mnv__hm_puts(out, indent);
    mnv__hm_puts(out, key);
    mnv__hm_puts(out, required ? ": " : "?: ");
    char *sub = indent_plus(indent, 4);
    if (!sub) {
        out->oom = true;
        return;
    }
    ts_nullable(val, sub, out);
    free(sub);
    mnv__hm_putc(out, ',');
    const cJSON *def = get(val, "default");
    if (!one_of && def) {
        mnv__hm_puts(out, " // default: ");
        put_default(out, val, def, true);
    }
    mnv__hm_putc(out, '\n');
}

static void ts_object(const cJSON *s, const char *indent, mnv__hm_buf *out) {
    const char *desc = get_str(s, "description");
    if (desc) comment_line(out, indent, desc);
    mnv__hm_puts(out, "{\n");
    const cJSON *props = get(s, "properties"), *req = get(s, "required"), *p;
    if (cJSON_IsObject(props)) {
        cJSON_ArrayForEach(p, props) ts_property(p, in_required(req, p->string), indent, out);
    }
    mnv__hm_puts(out, indent);
    mnv__hm_putc(out, '}');
}

static void ts_typed(const cJSON *s, const char *ty, const char *indent, mnv__hm_buf *out) {
    if (strcmp(ty, "object") == 0) {
        ts_object(s, indent, out);
    } else if (strcmp(ty, "string") == 0) {
        const cJSON *en = get(s, "enum"), *v;
        size_t n = 0;
        if (cJSON_IsArray(en)) {
            cJSON_ArrayForEach(v, en) {
                if (!cJSON_IsString(v)) continue;
                mnv__hm_puts(out, n++ ? " | \"" : "\"");
                mnv__hm_puts(out, v->valuestring);
                mnv__hm_putc(out, '"');
            }
        }
        if (!n) mnv__hm_puts(out, "string");
    } else if (strcmp(ty, "number") == 0 || strcmp(ty, "integer") == 0) {
        mnv__hm_puts(out, "number");
    } else if (strcmp(ty, "boolean") == 0) {
        mnv__hm_puts(out, "boolean");
    } else if (strcmp(ty, "array") == 0) {
        const cJSON *items = get(s, "items");
        if (items) {
            ts(items, indent, out);
            mnv__hm_puts(out, "[]");
        } else {
            mnv__hm_puts(out, "Array<any>");
        }
    } else {
        mnv__hm_puts(out, "any");
    }
}

static void ts(const cJSON *s, const char *indent, mnv__hm_buf *out) {
    const cJSON *one_of = get(s, "oneOf"), *type = get(s, "type");
    if (cJSON_IsArray(one_of)) {
        ts_one_of(one_of, indent, out);
        return;
    }
    if (cJSON_IsArray(type)) { /* ["number", "string"] -> number | string */
        size_t n = 0;
        const cJSON *t;
        cJSON_ArrayForEach(t, type) {
            if (!cJSON_IsString(t)) continue;
            if (n++) mnv__hm_puts(out, " | ");
            mnv__hm_puts(out, strcmp(t->valuestring, "integer") == 0 ? "number" : t->valuestring);
        }
        if (n) return;
    }
    if (cJSON_IsString(type)) ts_typed(s, type->valuestring, indent, out);
    else mnv__hm_puts(out, "any");
}

mnv_status mnv__hm_schema_to_ts(const char *json, size_t len, char **ts_out) {
    *ts_out = NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        size_t off = end && end >= json ? (size_t)(end - json) : 0;
        return mnv_set_error(MNV_ERR_FORMAT, "tool parameters: invalid JSON at byte %zu", off);
    }
    mnv__hm_buf b = {0};
    ts(root, "", &b);
    mnv__hm_putc(&b, 0); /* "" is a valid rendering: keep a non-NULL string */
    cJSON_Delete(root);
    if (b.oom) {
        mnv__hm_free(&b);
        return mnv_set_error(MNV_ERR_NOMEM, "tool parameters: out of memory");
    }
    *ts_out = b.p;
    return MNV_OK;
}

/* ---- the "# Tools" section ----------------------------------------------------- */

typedef struct {
    mnv__hm_buf *out;
    const char *prefix; /* "// " or "" */
} line_ctx;

static void put_line(void *ctx, const char *line, size_t n) {
    line_ctx *c = ctx;
    mnv__hm_putc(c->out, '\n');
    mnv__hm_puts(c->out, c->prefix);
    mnv__hm_put(c->out, line, n);
}

/* One namespace: "## NAME\n", the description, "namespace NAME {\n", each
 * tool's comment lines and "type ...;\n", "} // namespace NAME", all joined
 * with "\n" (hence the blank lines). */
static void ns_section(const mnv__hm_ns *ns, mnv__hm_buf *out) {
    mnv__hm_puts(out, "## ");
    mnv__hm_puts(out, ns->name);
    mnv__hm_putc(out, '\n');
    line_ctx lc = {out, ns->n_tools ? "// " : ""};
    mnv__hm_lines(ns->description, put_line, &lc);
    if (!ns->n_tools) return;
    mnv__hm_puts(out, "\nnamespace ");
    mnv__hm_puts(out, ns->name);
    mnv__hm_puts(out, " {\n");
    lc.prefix = "// ";
    for (size_t i = 0; i < ns->n_tools; i++) {
        const mnv__hm_tool *t = &ns->tools[i];
        mnv__hm_lines(t->description, put_line, &lc);
        mnv__hm_puts(out, "\ntype ");
        mnv__hm_puts(out, t->name);
        if (t->ts) {
            mnv__hm_puts(out, " = (_: ");
            mnv__hm_puts(out, t->ts);
            mnv__hm_puts(out, ") => any;\n");
        } else {
            mnv__hm_puts(out, " = () => any;\n");
        }
    }
    mnv__hm_puts(out, "\n} // namespace ");
    mnv__hm_puts(out, ns->name);
}

bool mnv__hm_tools_section(const mnv__hm_ns *ns, size_t n, mnv_chat_role where, mnv__hm_buf *out) {
    bool any = false;
    const char *last = NULL; /* names are unique: walk them in byte order */
    for (;;) {
        const mnv__hm_ns *next = NULL;
        for (size_t i = 0; i < n; i++) {
            if (ns[i].placement != where || (last && strcmp(ns[i].name, last) <= 0)) continue;
            if (!next || strcmp(ns[i].name, next->name) < 0) next = &ns[i];
        }
        if (!next) break;
        mnv__hm_puts(out, any ? "\n\n" : "# Tools\n\n");
        ns_section(next, out);
        any = true;
        last = next->name;
    }
    return any;
}
