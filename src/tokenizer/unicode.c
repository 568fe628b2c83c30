/* UTF-8 helpers (the project's one encoder and its strict decoder, used by
 * the chat templates too), lossy decoding and Unicode normalization (NFC/NFD)
 * for the tokenizer. The normalization tables come from
 * scripts/gen_unicode_tables.py (Python's unicodedata); Hangul syllables are
 * composed algorithmically. */
#include <stdlib.h>

#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode_tables.h"

const char *mnv__unicode_version(void) { return MNV_UNICODE_VERSION; }

/* ---- UTF-8 ------------------------------------------------------------------ */

/* Allowed range of the second byte of a sequence led by `lead`. */
static void second_range(uint8_t lead, uint8_t *lo, uint8_t *hi) {
    *lo = 0x80;
    *hi = 0xBF;
    if (lead == 0xE0) *lo = 0xA0;
    else if (lead == 0xED) *hi = 0x9F;
    else if (lead == 0xF0) *lo = 0x90;
    else if (lead == 0xF4) *hi = 0x8F;
}

static int seq_len(uint8_t lead) {
    if (lead < 0x80) return 1;
    if (lead >= 0xC2 && lead <= 0xDF) return 2;
    if (lead >= 0xE0 && lead <= 0xEF) return 3;
    if (lead >= 0xF0 && lead <= 0xF4) return 4;
    return 0;
}

size_t mnv__utf8_next(const char *s, size_t n, uint32_t *cp) {
    const uint8_t *u = (const uint8_t *)s;
    if (n == 0) return 0;
    int len = seq_len(u[0]);
    if (len == 0 || (size_t)len > n) return 0;
    if (len == 1) {
        *cp = u[0];
        return 1;
    }
    uint8_t lo, hi;
    second_range(u[0], &lo, &hi);
    if (u[1] < lo || u[1] > hi) return 0;
    for (int i = 2; i < len; i++)
        if ((u[i] & 0xC0) != 0x80) return 0;
    uint32_t c = u[0] & (0x7F >> len);
    for (int i = 1; i < len; i++) c = (c << 6) | (u[i] & 0x3F);
    *cp = c;
    return (size_t)len;
}

size_t mnv__utf8_encode(uint32_t cp, char out[4]) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

bool mnv__utf8_valid(const char *s, size_t n, size_t *bad_off) {
    size_t i = 0;
    uint32_t cp;
    while (i < n) {
        uint64_t w;
        if (n - i >= 8 && (memcpy(&w, s + i, 8), !(w & 0x8080808080808080ull))) {
            i += 8; /* eight ASCII bytes (most of a tokenizer.json) */
            continue;
        }
        uint8_t c = (uint8_t)s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF && i + 1 < n && ((uint8_t)s[i + 1] & 0xC0) == 0x80) {
            i += 2; /* two-byte character (byte-level vocabularies are full of them) */
            continue;
        }
        size_t l = mnv__utf8_next(s + i, n - i, &cp);
        if (!l) {
            if (bad_off) *bad_off = i;
            return false;
        }
        i += l;
    }
    return true;
}

static const char k_fffd[3] = {(char)0xEF, (char)0xBF, (char)0xBD};

void mnv__utf8_dec_push(mnv__utf8_dec *d, const char *s, size_t n, mnv__buf *out) {
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        if (d->n > 0) {
            uint8_t lo = 0x80, hi = 0xBF;
            if (d->n == 1) second_range(d->pend[0], &lo, &hi);
            if (c >= lo && c <= hi) {
                d->pend[d->n++] = c;
                if (d->n == d->need) {
                    mnv__buf_put(out, d->pend, d->n);
                    d->n = 0;
                }
                continue;
            }
            /* The held bytes can never complete: one U+FFFD, then c afresh. */
            mnv__buf_put(out, k_fffd, 3);
            d->n = 0;
        }
        int len = seq_len(c);
        if (len == 1) {
            mnv__buf_putc(out, (char)c);
        } else if (len == 0) {
            mnv__buf_put(out, k_fffd, 3);
        } else {
            d->pend[0] = c;
            d->n = 1;
            d->need = (uint8_t)len;
        }
    }
}

void mnv__utf8_dec_flush(mnv__utf8_dec *d, mnv__buf *out) {
    if (d->n) mnv__buf_put(out, k_fffd, 3);
    d->n = 0;
}

void mnv__utf8_lossy(const char *s, size_t n, mnv__buf *out) {
    mnv__utf8_dec d = {{0}, 0, 0};
    mnv__utf8_dec_push(&d, s, n, out);
    mnv__utf8_dec_flush(&d, out);
}

bool mnv__is_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* ---- normalization ------------------------------------------------------------ */

enum { S_BASE = 0xAC00, L_BASE = 0x1100, V_BASE = 0x1161, T_BASE = 0x11A7 };
enum { L_COUNT = 19, V_COUNT = 21, T_COUNT = 28, N_COUNT = V_COUNT * T_COUNT,
       S_COUNT = L_COUNT * N_COUNT };

#define N_ROWS(a) (sizeof(a) / sizeof((a)[0]))

static int ccc_of(uint32_t cp) {
    if (cp < 0x300) return 0;
    size_t lo = 0, hi = N_ROWS(ccc_table);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < ccc_table[mid][0]) hi = mid;
        else if (cp > ccc_table[mid][1]) lo = mid + 1;
        else return (int)ccc_table[mid][2];
    }
    return 0;
}

static const uint32_t *decomp_of(uint32_t cp) {
    size_t lo = 0, hi = N_ROWS(decomp_table);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < decomp_table[mid][0]) hi = mid;
        else if (cp > decomp_table[mid][0]) lo = mid + 1;
        else return decomp_table[mid];
    }
    return NULL;
}

static uint32_t compose_pair(uint32_t a, uint32_t b) {
    if (a >= L_BASE && a < L_BASE + L_COUNT && b >= V_BASE && b < V_BASE + V_COUNT)
        return S_BASE + ((a - L_BASE) * V_COUNT + (b - V_BASE)) * T_COUNT;
    if (a >= S_BASE && a < S_BASE + S_COUNT && (a - S_BASE) % T_COUNT == 0 && b > T_BASE &&
        b < T_BASE + T_COUNT)
        return a + (b - T_BASE);
    size_t lo = 0, hi = N_ROWS(comp_table);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const uint32_t *r = comp_table[mid];
        if (a < r[0] || (a == r[0] && b < r[1])) hi = mid;
        else if (a > r[0] || b > r[1]) lo = mid + 1;
        else return r[2];
    }
    return 0;
}

typedef struct {
    uint32_t *v;
    size_t n, cap;
    bool oom;
} cpvec;

static void cp_push(cpvec *c, uint32_t cp) {
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        uint32_t *v = realloc(c->v, cap * sizeof *v);
        if (!v) {
            c->oom = true;
            return;
        }
        c->v = v;
        c->cap = cap;
    }
    c->v[c->n++] = cp;
}

static void decompose(uint32_t cp, cpvec *out, int depth) {
    if (cp >= S_BASE && cp < S_BASE + S_COUNT) {
        uint32_t s = cp - S_BASE;
        cp_push(out, L_BASE + s / N_COUNT);
        cp_push(out, V_BASE + (s % N_COUNT) / T_COUNT);
        if (s % T_COUNT) cp_push(out, T_BASE + s % T_COUNT);
        return;
    }
    const uint32_t *d = cp >= 0xC0 && depth < 8 ? decomp_of(cp) : NULL;
    if (!d) {
        cp_push(out, cp);
        return;
    }
    decompose(d[1], out, depth + 1);
    if (d[2]) decompose(d[2], out, depth + 1);
}

/* Canonical ordering: stable sort of each run of non-starters by class. */
static void reorder(cpvec *c) {
    for (size_t i = 1; i < c->n; i++) {
        uint32_t x = c->v[i];
        int cx = ccc_of(x);
        if (cx == 0) continue;
        size_t j = i;
        while (j > 0) {
            int cp = ccc_of(c->v[j - 1]);
            if (cp <= cx) break;
            c->v[j] = c->v[j - 1];
            j--;
        }
        c->v[j] = x;
    }
}

static void compose(cpvec *c) {
    size_t n_out = 0;
    long sp = -1;       /* position of the last starter in the output */
    int last_cc = -1;   /* class of the last character after it, -1: none */
    for (size_t i = 0; i < c->n; i++) {
        uint32_t x = c->v[i];
        int cc = ccc_of(x);
        if (sp >= 0 && (last_cc == -1 || last_cc < cc)) {
            uint32_t comp = compose_pair(c->v[sp], x);
            if (comp) {
                c->v[sp] = comp;
                continue;
            }
        }
        if (cc == 0) {
            sp = (long)n_out;
            last_cc = -1;
        } else {
            last_cc = cc;
        }
        c->v[n_out++] = x;
    }
    c->n = n_out;
}

void mnv__normalize_nf(const char *s, size_t n, bool do_compose, mnv__buf *out) {
    /* Nothing below U+0300 decomposes-and-stays-changed under NFC, and UTF-8
     * lead bytes of code points >= U+0300 are >= 0xCC. */
    size_t i;
    for (i = 0; i < n; i++)
        if ((uint8_t)s[i] >= 0xCC || (!do_compose && (uint8_t)s[i] >= 0xC3)) break;
    if (i == n) {
        mnv__buf_put(out, s, n);
        return;
    }
    cpvec c = {0};
    for (i = 0; i < n;) {
        uint32_t cp;
        size_t l = mnv__utf8_next(s + i, n - i, &cp);
        if (!l) { /* callers pass valid UTF-8; be safe anyway */
            cp = 0xFFFD;
            l = 1;
        }
        decompose(cp, &c, 0);
        i += l;
    }
    reorder(&c);
    if (do_compose) compose(&c);
    if (c.oom) out->oom = true;
    for (i = 0; i < c.n; i++) mnv__buf_put_cp(out, c.v[i]);
    free(c.v);
}
