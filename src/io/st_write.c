/* Writing safetensors files (mnv_st_write): header JSON built by hand so the
 * key order and integer formatting are exact; data written to a temporary
 * file in the same directory, then renamed over the target. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/safetensors.h"

typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} st_buf;

static void sb_put(st_buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
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

static void sb_str(st_buf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_u64(st_buf *b, uint64_t v) {
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    sb_put(b, tmp, (size_t)n);
}

/* A JSON string literal: quotes, backslashes and control bytes escaped. */
static void sb_json_str(st_buf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            sb_put(b, esc, 2);
        } else if (*p < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            sb_put(b, esc, 6);
        } else {
            sb_put(b, (const char *)p, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static uint64_t tensor_bytes(const mnv_st_write_tensor *t) {
    uint64_t n = mnv_dtype_size(t->dtype);
    for (int32_t d = 0; d < t->ndim; d++) n *= (uint64_t)t->shape[d];
    return n;
}

static mnv_status check_tensor(const char *path, const mnv_st_write_tensor *t, size_t i) {
    if (!t->name)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "%s: tensor %zu has no name", path, i);
    if (strcmp(t->name, "__metadata__") == 0)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "%s: '__metadata__' is not a tensor name", path);
    if ((int)t->dtype < 0 || t->dtype >= MNV_DTYPE_COUNT)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "%s: tensor '%s': bad dtype %d", path, t->name,
                             (int)t->dtype);
    if (t->ndim < 0 || t->ndim > MNV_ST_MAX_DIMS)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "%s: tensor '%s': bad ndim %d", path, t->name,
                             (int)t->ndim);
    uint64_t n = mnv_dtype_size(t->dtype);
    for (int32_t d = 0; d < t->ndim; d++) {
        if (t->shape[d] < 0 || __builtin_mul_overflow(n, (uint64_t)t->shape[d], &n))
            return mnv_set_error(MNV_ERR_INVALID_ARG, "%s: tensor '%s': bad shape dimension %d",
                                 path, t->name, (int)d);
    }
    if (n > (1ull << 52))
        return mnv_set_error(MNV_ERR_INVALID_ARG, "%s: tensor '%s': %llu bytes is too large", path,
                             t->name, (unsigned long long)n);
    if (n && !t->data)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "%s: tensor '%s': NULL data", path, t->name);
    return MNV_OK;
}

static int cmp_cstr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static mnv_status check_args(const char *path, const mnv_st_write_tensor *t, size_t n,
                             const char *const *meta, size_t n_meta) {
    if (!path) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_st_write: NULL path");
    if ((n && !t) || (n_meta && !meta))
        return mnv_set_error(MNV_ERR_INVALID_ARG, "%s: NULL tensor or metadata array", path);
    for (size_t i = 0; i < 2 * n_meta; i++)
        if (!meta[i])
            return mnv_set_error(MNV_ERR_INVALID_ARG, "%s: metadata entry %zu is NULL", path, i / 2);
    for (size_t i = 0; i < n; i++) {
        mnv_status st = check_tensor(path, &t[i], i);
        if (st != MNV_OK) return st;
    }
    const char **names = malloc((n ? n : 1) * sizeof *names);
    if (!names) return mnv_set_error(MNV_ERR_NOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < n; i++) names[i] = t[i].name;
    qsort(names, n, sizeof *names, cmp_cstr);
    mnv_status st = MNV_OK;
    for (size_t i = 1; i < n && st == MNV_OK; i++)
        if (strcmp(names[i - 1], names[i]) == 0)
            st = mnv_set_error(MNV_ERR_INVALID_ARG, "%s: tensor '%s' given twice", path, names[i]);
    free(names);
    return st;
}

static uint64_t align8(uint64_t v) { return (v + 7) & ~(uint64_t)7; }

/* The header JSON, padded with spaces so that 8 + its length is a multiple of 8. */
static mnv_status build_header(const char *path, const mnv_st_write_tensor *t, size_t n,
                               const char *const *meta, size_t n_meta, st_buf *b) {
    sb_str(b, "{");
    if (n_meta) {
        sb_str(b, "\"__metadata__\":{");
        for (size_t i = 0; i < n_meta; i++) {
            if (i) sb_str(b, ",");
            sb_json_str(b, meta[2 * i]);
            sb_str(b, ":");
            sb_json_str(b, meta[2 * i + 1]);
        }
        sb_str(b, "}");
    }
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        if (i || n_meta) sb_str(b, ",");
        sb_json_str(b, t[i].name);
        sb_str(b, ":{\"dtype\":\"");
        sb_str(b, mnv_dtype_name(t[i].dtype));
        sb_str(b, "\",\"shape\":[");
        for (int32_t d = 0; d < t[i].ndim; d++) {
            if (d) sb_str(b, ",");
            sb_u64(b, (uint64_t)t[i].shape[d]);
        }
        uint64_t begin = align8(off), end = begin + tensor_bytes(&t[i]);
        sb_str(b, "],\"data_offsets\":[");
        sb_u64(b, begin);
        sb_str(b, ",");
        sb_u64(b, end);
        sb_str(b, "]}");
        off = end;
    }
    sb_str(b, "}");
    while (!b->oom && b->len % 8) sb_str(b, " ");
    if (b->oom) return mnv_set_error(MNV_ERR_NOMEM, "%s: out of memory for the header", path);
    if (b->len > 100000000)
        return mnv_set_error(MNV_ERR_RANGE, "%s: header of %zu bytes exceeds the 100000000-byte limit",
                             path, b->len);
    return MNV_OK;
}

static mnv_status write_body(FILE *f, const char *path, const st_buf *h,
                             const mnv_st_write_tensor *t, size_t n) {
    uint8_t len[8], zeros[8] = {0};
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)((uint64_t)h->len >> (8 * i));
    bool ok = fwrite(len, 1, 8, f) == 8 && fwrite(h->p, 1, h->len, f) == h->len;
    uint64_t off = 0;
    for (size_t i = 0; ok && i < n; i++) {
        uint64_t begin = align8(off), nb = tensor_bytes(&t[i]);
        ok = fwrite(zeros, 1, (size_t)(begin - off), f) == begin - off;
        if (ok && nb) ok = fwrite(t[i].data, 1, (size_t)nb, f) == nb;
        off = begin + nb;
    }
    if (!ok) return mnv_set_error(MNV_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    return MNV_OK;
}

static mnv_status write_temp_and_rename(const char *path, const st_buf *h,
                                        const mnv_st_write_tensor *t, size_t n) {
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (!tmp) return mnv_set_error(MNV_ERR_NOMEM, "%s: out of memory", path);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp.XXXXXX", 12);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        mnv_status st = mnv_set_error(MNV_ERR_IO, "%s: cannot create %s: %s", path, tmp, strerror(errno));
        free(tmp);
        return st;
    }
    fchmod(fd, 0644); /* mkstemp makes 0600; a model file is meant to be shared */
    FILE *f = fdopen(fd, "wb");
    mnv_status st = MNV_OK;
    if (!f) {
        st = mnv_set_error(MNV_ERR_IO, "%s: fdopen: %s", tmp, strerror(errno));
        close(fd);
    } else {
        st = write_body(f, path, h, t, n);
        if (st == MNV_OK && (fflush(f) != 0 || fsync(fileno(f)) != 0))
            st = mnv_set_error(MNV_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        if (fclose(f) != 0 && st == MNV_OK)
            st = mnv_set_error(MNV_ERR_IO, "%s: close failed: %s", path, strerror(errno));
    }
    if (st == MNV_OK && rename(tmp, path) != 0)
        st = mnv_set_error(MNV_ERR_IO, "%s: cannot rename %s into place: %s", path, tmp,
                           strerror(errno));
    if (st != MNV_OK) unlink(tmp);
    free(tmp);
    return st;
}

mnv_status mnv_st_write(const char *path, const mnv_st_write_tensor *tensors, size_t n,
                        const char *const *meta_kv, size_t n_meta_pairs) {
    mnv_status st = check_args(path, tensors, n, meta_kv, n_meta_pairs);
    if (st != MNV_OK) return st;
    st_buf h = {0};
    st = build_header(path, tensors, n, meta_kv, n_meta_pairs, &h);
    if (st == MNV_OK) st = write_temp_and_rename(path, &h, tensors, n);
    free(h.p);
    return st;
}
