/* Streaming safetensors writer (see st_stream.h): contiguous Hugging Face
 * layout, header first, data by pwrite at known offsets, temp file renamed
 * on commit. */
#include "io/st_stream.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    uint64_t begin, nbytes, written;
} st_slot;

struct mnv_st_stream {
    char *path, *tmp;
    int fd;
    bool committed;
    size_t n;
    st_slot *slot;       /* (n) by the caller's index */
    uint64_t data_start; /* file offset of the byte buffer */
    uint64_t total;
};

/* ---- a growable text buffer for the header ---------------------------------- */

typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} txt;

static void put(txt *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void puts_(txt *b, const char *s) { put(b, s, strlen(s)); }

static void put_u64(txt *b, uint64_t v) {
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    put(b, tmp, (size_t)n);
}

static void put_json_str(txt *b, const char *s) {
    put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            put(b, esc, 2);
        } else if (*p < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            put(b, esc, 6);
        } else {
            put(b, (const char *)p, 1);
        }
    }
    put(b, "\"", 1);
}

/* ---- layout ------------------------------------------------------------------ */

typedef struct {
    const mnv_st_stream_tensor *t;
    size_t idx;
} order_item;

static int cmp_order(const void *a, const void *b) {
    const mnv_st_stream_tensor *x = ((const order_item *)a)->t, *y = ((const order_item *)b)->t;
    size_t sx = mnv_dtype_size(x->dtype), sy = mnv_dtype_size(y->dtype);
    if (sx != sy) return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const order_item *)a)->t->name, ((const order_item *)b)->t->name);
}

static mnv_status check_tensor(const char *path, const mnv_st_stream_tensor *t, uint64_t *nbytes) {
    if (!t->name || strcmp(t->name, "__metadata__") == 0)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "%s: bad tensor name", path);
    if ((int)t->dtype < 0 || t->dtype >= MNV_DTYPE_COUNT || t->ndim < 0 || t->ndim > MNV_ST_MAX_DIMS)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "%s: tensor '%s': bad dtype or rank", path, t->name);
    uint64_t n = mnv_dtype_size(t->dtype);
    for (int32_t d = 0; d < t->ndim; d++)
        if (t->shape[d] < 0 || __builtin_mul_overflow(n, (uint64_t)t->shape[d], &n))
            return mnv_set_error(MNV_ERR_INVALID_ARG, "%s: tensor '%s': bad shape", path, t->name);
    *nbytes = n;
    return MNV_OK;
}

static void put_entry(txt *h, const mnv_st_stream_tensor *t, uint64_t begin, uint64_t end) {
    put_json_str(h, t->name);
    puts_(h, ":{\"dtype\":\"");
    puts_(h, mnv_dtype_name(t->dtype));
    puts_(h, "\",\"shape\":[");
    for (int32_t d = 0; d < t->ndim; d++) {
        if (d) puts_(h, ",");
        put_u64(h, (uint64_t)t->shape[d]);
    }
    puts_(h, "],\"data_offsets\":[");
    put_u64(h, begin);
    puts_(h, ",");
    put_u64(h, end);
    puts_(h, "]}");
}

/* Sort, assign contiguous offsets, build the padded header. */
static mnv_status layout(mnv_st_stream *s, const mnv_st_stream_tensor *t, const char *const *meta, size_t n_meta,
                         txt *h) {
    order_item *ord = malloc((s->n ? s->n : 1) * sizeof *ord);
    if (!ord) return mnv_set_error(MNV_ERR_NOMEM, "%s: out of memory", s->path);
    mnv_status st = MNV_OK;
    for (size_t i = 0; i < s->n && !st; i++) {
        ord[i] = (order_item){&t[i], i};
        st = check_tensor(s->path, &t[i], &s->slot[i].nbytes);
    }
    if (!st) qsort(ord, s->n, sizeof *ord, cmp_name);
    for (size_t i = 1; i < s->n && !st; i++)
        if (strcmp(ord[i - 1].t->name, ord[i].t->name) == 0)
            st = mnv_set_error(MNV_ERR_INVALID_ARG, "%s: tensor '%s' given twice", s->path, ord[i].t->name);
    if (!st) qsort(ord, s->n, sizeof *ord, cmp_order);
    puts_(h, "{");
    if (n_meta) {
        puts_(h, "\"__metadata__\":{");
        for (size_t i = 0; i < n_meta; i++) {
            if (i) puts_(h, ",");
            put_json_str(h, meta[2 * i]);
            puts_(h, ":");
            put_json_str(h, meta[2 * i + 1]);
        }
        puts_(h, "}");
    }
    uint64_t off = 0;
    for (size_t i = 0; i < s->n && !st; i++) {
        st_slot *sl = &s->slot[ord[i].idx];
        sl->begin = off;
        off += sl->nbytes;
        if (i || n_meta) puts_(h, ",");
        put_entry(h, ord[i].t, sl->begin, off);
    }
    free(ord);
    puts_(h, "}");
    while (!h->oom && (8 + h->len) % 8) puts_(h, " ");
    if (!st && h->oom) st = mnv_set_error(MNV_ERR_NOMEM, "%s: out of memory for the header", s->path);
    if (!st && h->len > 100000000)
        st = mnv_set_error(MNV_ERR_RANGE, "%s: header of %zu bytes exceeds the 100000000-byte limit", s->path, h->len);
    s->total = off;
    return st;
}

/* ---- file -------------------------------------------------------------------- */

static mnv_status write_all(int fd, const char *path, const void *data, size_t len, uint64_t off) {
    const uint8_t *p = data;
    while (len) {
        ssize_t w = pwrite(fd, p, len, (off_t)off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return mnv_set_error(MNV_ERR_IO, "%s: write failed: %s", path, w < 0 ? strerror(errno) : "no space");
        p += w;
        len -= (size_t)w;
        off += (uint64_t)w;
    }
    return MNV_OK;
}

static mnv_status open_temp(mnv_st_stream *s) {
    size_t plen = strlen(s->path);
    s->tmp = malloc(plen + 16);
    if (!s->tmp) return mnv_set_error(MNV_ERR_NOMEM, "%s: out of memory", s->path);
    memcpy(s->tmp, s->path, plen);
    memcpy(s->tmp + plen, ".tmp.XXXXXX", 12);
    s->fd = mkstemp(s->tmp);
    if (s->fd < 0) {
        mnv_status st = mnv_set_error(MNV_ERR_IO, "%s: cannot create a temporary file: %s", s->path, strerror(errno));
        free(s->tmp);
        s->tmp = NULL;
        return st;
    }
    fchmod(s->fd, 0644); /* mkstemp makes 0600; a model file is meant to be shared */
    return MNV_OK;
}

mnv_status mnv_st_stream_create(const char *path, const mnv_st_stream_tensor *t, size_t n,
                                const char *const *meta_kv, size_t n_meta, mnv_st_stream **out) {
    if (!out) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_st_stream_create: NULL output");
    *out = NULL;
    if (!path || (n && !t) || (n_meta && !meta_kv))
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_st_stream_create: NULL argument");
    mnv_st_stream *s = calloc(1, sizeof *s);
    if (!s) return mnv_set_error(MNV_ERR_NOMEM, "%s: out of memory", path);
    s->fd = -1;
    s->n = n;
    s->path = mnv_strdup(path);
    s->slot = calloc(n ? n : 1, sizeof *s->slot);
    txt h = {0};
    mnv_status st = (!s->path || !s->slot) ? mnv_set_error(MNV_ERR_NOMEM, "%s: out of memory", path) : MNV_OK;
    if (!st) st = layout(s, t, meta_kv, n_meta, &h);
    if (!st) st = open_temp(s);
    if (!st) {
        uint8_t len[8];
        for (int i = 0; i < 8; i++) len[i] = (uint8_t)((uint64_t)h.len >> (8 * i));
        s->data_start = 8 + (uint64_t)h.len;
        st = write_all(s->fd, s->tmp, len, 8, 0);
        if (!st) st = write_all(s->fd, s->tmp, h.p, h.len, 8);
        if (!st && ftruncate(s->fd, (off_t)(s->data_start + s->total)) != 0)
            st = mnv_set_error(MNV_ERR_IO, "%s: cannot size the file to %llu bytes: %s", s->tmp,
                               (unsigned long long)(s->data_start + s->total), strerror(errno));
    }
    free(h.p);
    if (st) {
        mnv_st_stream_free(s);
        return st;
    }
    *out = s;
    return MNV_OK;
}

uint64_t mnv_st_stream_nbytes(const mnv_st_stream *s, size_t i) { return s && i < s->n ? s->slot[i].nbytes : 0; }

uint64_t mnv_st_stream_total_bytes(const mnv_st_stream *s) { return s ? s->total : 0; }

mnv_status mnv_st_stream_write(mnv_st_stream *s, size_t i, uint64_t off, const void *data, size_t len) {
    if (!s || i >= s->n || (len && !data))
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_st_stream_write: bad argument");
    st_slot *sl = &s->slot[i];
    if (s->fd < 0) return mnv_set_error(MNV_ERR_INVALID_ARG, "%s: write after finish", s->path);
    if (off > sl->nbytes || len > sl->nbytes - off)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "%s: tensor %zu: bytes [%llu, %llu) beyond its %llu bytes", s->path,
                             i, (unsigned long long)off, (unsigned long long)(off + len),
                             (unsigned long long)sl->nbytes);
    mnv_status st = write_all(s->fd, s->tmp, data, len, s->data_start + sl->begin + off);
    if (!st) sl->written += len;
    return st;
}

mnv_status mnv_st_stream_finish(mnv_st_stream *s) {
    if (!s || s->fd < 0) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_st_stream_finish: not open");
    for (size_t i = 0; i < s->n; i++)
        if (s->slot[i].written != s->slot[i].nbytes)
            return mnv_set_error(MNV_ERR_INTERNAL, "%s: tensor %zu: %llu of %llu bytes written", s->path, i,
                                 (unsigned long long)s->slot[i].written, (unsigned long long)s->slot[i].nbytes);
    mnv_status st = MNV_OK;
    if (fsync(s->fd) != 0) st = mnv_set_error(MNV_ERR_IO, "%s: fsync failed: %s", s->tmp, strerror(errno));
    if (close(s->fd) != 0 && !st) st = mnv_set_error(MNV_ERR_IO, "%s: close failed: %s", s->tmp, strerror(errno));
    s->fd = -1;
    return st;
}

mnv_status mnv_st_stream_commit(mnv_st_stream *s) {
    if (!s || s->fd >= 0 || !s->tmp || s->committed)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_st_stream_commit: stream not finished");
    if (rename(s->tmp, s->path) != 0)
        return mnv_set_error(MNV_ERR_IO, "%s: cannot rename %s into place: %s", s->path, s->tmp, strerror(errno));
    s->committed = true;
    return MNV_OK;
}

void mnv_st_stream_free(mnv_st_stream *s) {
    if (!s) return;
    if (s->fd >= 0) close(s->fd);
    if (s->tmp && !s->committed) unlink(s->tmp);
    free(s->tmp);
    free(s->path);
    free(s->slot);
    free(s);
}
