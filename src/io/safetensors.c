/* Safetensors header parsing and validation (mnv_st_parse).
 *
 * Layout: u64 little-endian header length N, N bytes of JSON, then the data
 * buffer. Every field is checked before any pointer into the buffer is made,
 * so a hostile file can at worst produce an error message. */
#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define ST_MAX_HEADER 100000000ull
#define ST_MAX_INT 9007199254740992.0 /* 2^53: larger JSON numbers lose precision */

/* A JSON number that is a non-negative integer no larger than 2^53. */
static bool json_u64(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return false;
    double d = j->valuedouble;
    if (!isfinite(d) || d < 0 || d > ST_MAX_INT || floor(d) != d) return false;
    *out = (uint64_t)d;
    return true;
}

static void fmt_shape(char *buf, size_t cap, const int64_t *shape, int32_t ndim) {
    size_t o = 0;
    buf[0] = 0;
    o += (size_t)snprintf(buf + o, cap - o, "[");
    for (int32_t i = 0; i < ndim && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

/* Dtype names the safetensors format defines that mnv_dtype lacks. */
static bool known_unsupported_dtype(const char *s) {
    static const char *const names[] = {"F8_E5M2", "F8_E4M3", "F8_E8M0", "C64",
                                        "F4",      "F6_E2M3", "F6_E3M2"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i]) == 0) return true;
    return false;
}

static mnv_status parse_dtype(const cJSON *e, const char *fname, const char *name,
                              mnv_dtype *out) {
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    if (!cJSON_IsString(d))
        return mnv_set_error(MNV_ERR_FORMAT, "%s: tensor '%s': %s", fname, name,
                             d ? "dtype is not a string" : "missing dtype");
    if (mnv_dtype_from_name(d->valuestring, out)) return MNV_OK;
    if (known_unsupported_dtype(d->valuestring))
        return mnv_set_error(MNV_ERR_UNSUPPORTED, "%s: tensor '%s': dtype %s is not supported",
                             fname, name, d->valuestring);
    return mnv_set_error(MNV_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%s'", fname, name,
                         d->valuestring);
}

/* Fills t->ndim, t->shape and t->nbytes (overflow-checked). */
static mnv_status parse_shape(const cJSON *e, const char *fname, mnv_st_tensor *t) {
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(e, "shape");
    if (!cJSON_IsArray(s))
        return mnv_set_error(MNV_ERR_FORMAT, "%s: tensor '%s': %s", fname, t->name,
                             s ? "shape is not an array" : "missing shape");
    int n = cJSON_GetArraySize(s);
    if (n > MNV_ST_MAX_DIMS)
        return mnv_set_error(MNV_ERR_UNSUPPORTED, "%s: tensor '%s': shape has %d dimensions (max %d)",
                             fname, t->name, n, MNV_ST_MAX_DIMS);
    uint64_t elems = 1;
    bool overflow = false;
    int i = 0;
    for (const cJSON *d = s->child; d; d = d->next, i++) {
        uint64_t v;
        if (!json_u64(d, &v) || v > (uint64_t)INT64_MAX)
            return mnv_set_error(MNV_ERR_FORMAT,
                                 "%s: tensor '%s': shape dimension %d is not a non-negative integer",
                                 fname, t->name, i);
        t->shape[i] = (int64_t)v;
        overflow |= __builtin_mul_overflow(elems, v, &elems);
    }
    t->ndim = n;
    overflow |= __builtin_mul_overflow(elems, (uint64_t)mnv_dtype_size(t->dtype), &t->nbytes);
    if (overflow) {
        char sh[160];
        fmt_shape(sh, sizeof sh, t->shape, t->ndim);
        return mnv_set_error(MNV_ERR_FORMAT, "%s: tensor '%s': shape %s of %s overflows 64 bits",
                             fname, t->name, sh, mnv_dtype_name(t->dtype));
    }
    return MNV_OK;
}

static mnv_status parse_offsets(const cJSON *e, const char *fname, const mnv_st_tensor *t,
                                uint64_t buf_size, uint64_t *begin, uint64_t *end) {
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!o)
        return mnv_set_error(MNV_ERR_FORMAT, "%s: tensor '%s': missing data_offsets", fname, t->name);
    if (!cJSON_IsArray(o) || cJSON_GetArraySize(o) != 2 || !json_u64(o->child, begin) ||
        !json_u64(o->child->next, end))
        return mnv_set_error(MNV_ERR_FORMAT,
                             "%s: tensor '%s': data_offsets must be two non-negative integers",
                             fname, t->name);
    if (*begin > *end)
        return mnv_set_error(MNV_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] begin > end",
                             fname, t->name, (unsigned long long)*begin, (unsigned long long)*end);
    if (*end - *begin != t->nbytes) {
        char sh[160];
        fmt_shape(sh, sizeof sh, t->shape, t->ndim);
        return mnv_set_error(MNV_ERR_FORMAT,
                             "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but shape "
                             "%s of %s needs %llu",
                             fname, t->name, (unsigned long long)*begin, (unsigned long long)*end,
                             (unsigned long long)(*end - *begin), sh, mnv_dtype_name(t->dtype),
                             (unsigned long long)t->nbytes);
    }
    if (*end > buf_size)
        return mnv_set_error(MNV_ERR_FORMAT,
                             "%s: tensor '%s': data_offsets end %llu beyond buffer size %llu", fname,
                             t->name, (unsigned long long)*end, (unsigned long long)buf_size);
    return MNV_OK;
}

static mnv_status check_metadata(const cJSON *m, const char *fname) {
    if (cJSON_IsNull(m)) return MNV_OK;
    if (!cJSON_IsObject(m))
        return mnv_set_error(MNV_ERR_FORMAT, "%s: __metadata__ is not an object", fname);
    for (const cJSON *c = m->child; c; c = c->next)
        if (!cJSON_IsString(c))
            return mnv_set_error(MNV_ERR_FORMAT, "%s: __metadata__ key '%s' is not a string", fname,
                                 c->string);
    return MNV_OK;
}

typedef struct {
    uint64_t begin, end;
    size_t idx;
} st_span;

static int cmp_span(const void *a, const void *b) {
    const st_span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const mnv_st_tensor *)a)->name, ((const mnv_st_tensor *)b)->name);
}

/* Sorting by begin, a tensor overlaps an earlier one iff it starts before
 * the furthest end seen so far. Empty tensors overlap nothing. */
static mnv_status check_overlaps(st_span *sp, size_t n, const mnv_st_tensor *t, const char *fname) {
    qsort(sp, n, sizeof *sp, cmp_span);
    size_t far = SIZE_MAX; /* index into sp of the furthest-reaching tensor so far */
    for (size_t i = 0; i < n; i++) {
        if (sp[i].begin == sp[i].end) continue;
        if (far != SIZE_MAX && sp[i].begin < sp[far].end)
            return mnv_set_error(MNV_ERR_FORMAT,
                                 "%s: tensor '%s' (bytes %llu..%llu) overlaps tensor '%s' (bytes "
                                 "%llu..%llu)",
                                 fname, t[sp[i].idx].name, (unsigned long long)sp[i].begin,
                                 (unsigned long long)sp[i].end, t[sp[far].idx].name,
                                 (unsigned long long)sp[far].begin, (unsigned long long)sp[far].end);
        if (far == SIZE_MAX || sp[i].end > sp[far].end) far = i;
    }
    return MNV_OK;
}

static mnv_status parse_entry(const cJSON *e, const char *fname, const uint8_t *buf,
                              uint64_t buf_size, mnv_st_tensor *t, st_span *span) {
    const char *name = e->string ? e->string : "";
    if (!cJSON_IsObject(e))
        return mnv_set_error(MNV_ERR_FORMAT, "%s: tensor '%s': entry is not an object", fname, name);
    memset(t, 0, sizeof *t);
    t->name = mnv_strdup(name);
    if (!t->name) return mnv_set_error(MNV_ERR_NOMEM, "%s: out of memory", fname);
    mnv_status st = parse_dtype(e, fname, name, &t->dtype);
    if (st == MNV_OK) st = parse_shape(e, fname, t);
    if (st == MNV_OK) st = parse_offsets(e, fname, t, buf_size, &span->begin, &span->end);
    if (st != MNV_OK) return st;
    t->data = buf + span->begin;
    return MNV_OK;
}

/* Only JSON whitespace (and NUL, which some writers pad with) may follow the object. */
static bool only_padding(const char *p, const char *end) {
    for (; p < end; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != 0) return false;
    return true;
}

static mnv_status parse_header_json(const uint8_t *file, uint64_t n, const char *fname,
                                    cJSON **out) {
    *out = NULL;
    /* A NUL-terminated private copy: cJSON then never reads past the header. */
    char *text = malloc((size_t)n + 1);
    if (!text) return mnv_set_error(MNV_ERR_NOMEM, "%s: cannot allocate %llu-byte header", fname,
                                    (unsigned long long)n);
    memcpy(text, file + 8, (size_t)n);
    text[n] = 0;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, (size_t)n, &end, 0);
    mnv_status st = MNV_OK;
    if (!root) {
        size_t at = end && end >= text && end <= text + n ? (size_t)(end - text) : 0;
        st = mnv_set_error(MNV_ERR_FORMAT, "%s: header is not valid JSON (error near byte %zu)", fname,
                           at + 8);
    } else if (!cJSON_IsObject(root)) {
        st = mnv_set_error(MNV_ERR_FORMAT, "%s: header is not a JSON object", fname);
    } else if (!only_padding(end, text + n)) {
        st = mnv_set_error(MNV_ERR_FORMAT, "%s: header has trailing bytes after the JSON object",
                           fname);
    }
    free(text);
    if (st != MNV_OK) {
        cJSON_Delete(root);
        return st;
    }
    *out = root;
    return MNV_OK;
}

static mnv_status parse_entries(const cJSON *root, const char *fname, const uint8_t *buf,
                                uint64_t buf_size, mnv_st_tensor *t, st_span *sp, size_t *n_out) {
    size_t n = 0;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (e->string && strcmp(e->string, "__metadata__") == 0) {
            mnv_status st = check_metadata(e, fname);
            if (st != MNV_OK) return st;
            continue;
        }
        sp[n].idx = n;
        mnv_status st = parse_entry(e, fname, buf, buf_size, &t[n], &sp[n]);
        n++; /* count it even on failure so its name is freed */
        *n_out = n;
        if (st != MNV_OK) return st;
    }
    *n_out = n;
    return MNV_OK;
}

static mnv_status check_duplicates(const mnv_st_tensor *t, size_t n, const char *fname) {
    for (size_t i = 1; i < n; i++)
        if (strcmp(t[i - 1].name, t[i].name) == 0)
            return mnv_set_error(MNV_ERR_FORMAT, "%s: tensor '%s' appears twice in the header", fname,
                                 t[i].name);
    return MNV_OK;
}

static mnv_status check_size(const uint8_t *file, size_t size, const char *fname, uint64_t *n_out) {
    if (!file && size)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "%s: NULL data with size %zu", fname, size);
    if (size < 8)
        return mnv_set_error(MNV_ERR_FORMAT,
                             "%s: file is %zu bytes, shorter than the 8-byte header length", fname,
                             size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | file[i];
    if (n > ST_MAX_HEADER)
        return mnv_set_error(MNV_ERR_FORMAT, "%s: header length %llu exceeds the %llu-byte limit",
                             fname, (unsigned long long)n, ST_MAX_HEADER);
    if (n > (uint64_t)size - 8)
        return mnv_set_error(MNV_ERR_FORMAT,
                             "%s: header length %llu exceeds the file size %zu minus 8", fname,
                             (unsigned long long)n, size);
    *n_out = n;
    return MNV_OK;
}

mnv_status mnv_st_parse(const uint8_t *file, size_t size, const char *fname,
                        mnv_st_tensor **out_tensors, size_t *out_n) {
    if (!out_tensors || !out_n) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_st_parse: NULL output");
    *out_tensors = NULL;
    *out_n = 0;
    if (!fname) fname = "<memory>";
    uint64_t hlen = 0;
    cJSON *root = NULL;
    mnv_status st = check_size(file, size, fname, &hlen);
    if (st == MNV_OK) st = parse_header_json(file, hlen, fname, &root);
    if (st != MNV_OK) return st;
    size_t cap = (size_t)cJSON_GetArraySize(root), n = 0;
    mnv_st_tensor *t = calloc(cap ? cap : 1, sizeof *t);
    st_span *sp = calloc(cap ? cap : 1, sizeof *sp);
    if (!t || !sp) st = mnv_set_error(MNV_ERR_NOMEM, "%s: out of memory for %zu tensors", fname, cap);
    const uint8_t *buf = file + 8 + hlen;
    if (st == MNV_OK) st = parse_entries(root, fname, buf, size - 8 - hlen, t, sp, &n);
    cJSON_Delete(root);
    if (st == MNV_OK) st = check_overlaps(sp, n, t, fname);
    free(sp);
    if (st == MNV_OK) {
        qsort(t, n, sizeof *t, cmp_tensor_name);
        st = check_duplicates(t, n, fname);
    }
    if (st != MNV_OK) {
        mnv_st_free_tensors(t, n);
        return st;
    }
    *out_tensors = t;
    *out_n = n;
    return MNV_OK;
}

void mnv_st_free_tensors(mnv_st_tensor *t, size_t n) {
    if (!t) return;
    for (size_t i = 0; i < n; i++) free(t[i].name);
    free(t);
}
