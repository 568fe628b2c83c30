/* Small helpers of the server that need no HTTP: growable text and the
 * JSON nesting check run before a body is parsed. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "server/server_int.h"

/* ---- growable text ------------------------------------------------------------- */

void srv_buf_put(srv_buf *b, const char *s, size_t n) {
    if (!n) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = MNV_MAX(b->cap * 2, b->len + n + 256);
        char *p = realloc(b->p, cap);
        if (!p) return; /* the text is cut; a reply still goes out */
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void srv_buf_puts(srv_buf *b, const char *s) { srv_buf_put(b, s, strlen(s)); }

void srv_buf_printf(srv_buf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) srv_buf_put(b, tmp, MNV_MIN((size_t)n, sizeof tmp - 1));
}

void srv_buf_free(srv_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- JSON nesting ------------------------------------------------------------------- */

int mnv__json_depth(const char *t, size_t n, int limit) {
    int d = 0, max = 0;
    bool str = false;
    for (size_t i = 0; i < n; i++) {
        char ch = t[i];
        if (str) {
            if (ch == '\\') i++;
            else if (ch == '"') str = false;
        } else if (ch == '"') {
            str = true;
        } else if (ch == '{' || ch == '[') {
            if (++d > limit) return -1;
            max = MNV_MAX(max, d);
        } else if (ch == '}' || ch == ']') {
            d--;
        }
    }
    return max;
}

