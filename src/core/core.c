#include "core/core.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static _Thread_local char tl_error[1024];

static const char *const status_names[] = {
#define MNV_X_STR(name, str) str,
    MNV_STATUS_LIST(MNV_X_STR)
#undef MNV_X_STR
};

const char *mnv_status_str(mnv_status s) {
    if ((int)s < 0 || s >= MNV_STATUS_COUNT) return "unknown status";
    return status_names[s];
}

const char *mnv_last_error(void) { return tl_error; }

#define MNV_STR_(x) #x
#define MNV_STR(x) MNV_STR_(x)
const char *mnv_version(void) {
    return MNV_STR(MNV_VERSION_MAJOR) "." MNV_STR(MNV_VERSION_MINOR) "." MNV_STR(MNV_VERSION_PATCH);
}

mnv_status mnv_set_error(mnv_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_error, sizeof tl_error, fmt, ap);
    va_end(ap);
    return s;
}

void mnv_error_prefix(const char *fmt, ...) {
    char prefix[512], old[sizeof tl_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, tl_error, sizeof old);
    snprintf(tl_error, sizeof tl_error, "%.500s: %.500s", prefix, old);
}

void mnv_clear_error(void) { tl_error[0] = 0; }

size_t mnv_last_error_copy(char *buf, size_t cap) {
    size_t n = strlen(tl_error);
    if (buf && cap) {
        size_t k = n < cap ? n : cap - 1;
        memcpy(buf, tl_error, k);
        buf[k] = 0;
    }
    return n;
}

/* The log sink: one process-wide pair, changed and used under a lock so that
 * a message never meets a callback with another callback's user data. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static mnv_log_callback log_cb;
static void *log_user;

void mnv_set_log_callback(mnv_log_callback cb, void *user_data) {
    pthread_mutex_lock(&log_lock);
    log_cb = cb;
    log_user = cb ? user_data : NULL;
    pthread_mutex_unlock(&log_lock);
}

void mnv__log(mnv_log_level level, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&log_lock);
    if (log_cb) log_cb(log_user, level, msg);
    else fprintf(stderr, "minerva: %s\n", msg);
    pthread_mutex_unlock(&log_lock);
}

static const struct {
    const char *name;
    size_t size;
} dtype_traits[MNV_DTYPE_COUNT] = {
    [MNV_DTYPE_F32] = {"F32", 4}, [MNV_DTYPE_F16] = {"F16", 2}, [MNV_DTYPE_BF16] = {"BF16", 2},
    [MNV_DTYPE_I32] = {"I32", 4}, [MNV_DTYPE_U32] = {"U32", 4}, [MNV_DTYPE_I16] = {"I16", 2},
    [MNV_DTYPE_U16] = {"U16", 2}, [MNV_DTYPE_I8] = {"I8", 1},   [MNV_DTYPE_U8] = {"U8", 1},
    [MNV_DTYPE_I64] = {"I64", 8}, [MNV_DTYPE_U64] = {"U64", 8}, [MNV_DTYPE_F64] = {"F64", 8},
    [MNV_DTYPE_BOOL] = {"BOOL", 1},
};

const char *mnv_dtype_name(mnv_dtype t) {
    if ((int)t < 0 || t >= MNV_DTYPE_COUNT) return "?";
    return dtype_traits[t].name;
}

size_t mnv_dtype_size(mnv_dtype t) {
    if ((int)t < 0 || t >= MNV_DTYPE_COUNT) return 0;
    return dtype_traits[t].size;
}

bool mnv_dtype_from_name(const char *name, mnv_dtype *out) {
    for (int i = 0; i < MNV_DTYPE_COUNT; i++) {
        if (strcmp(name, dtype_traits[i].name) == 0) {
            *out = (mnv_dtype)i;
            return true;
        }
    }
    return false;
}

float mnv_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) {
                mant <<= 1;
                exp--;
            }
            mant &= 0x3ff;
            u = sign | (exp << 23) | (mant << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (mant << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t mnv_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000;
    int32_t exp = (int32_t)((u >> 23) & 0xff) - 127 + 15;
    uint32_t mant = u & 0x7fffff;
    if (((u >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        mant |= 0x800000;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = sign | ((uint32_t)exp << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)h;
}

double mnv_time_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void *mnv_aligned_alloc(size_t align, size_t size) {
    void *p = NULL;
    if (size == 0) size = align;
    if (posix_memalign(&p, align, size) != 0) return NULL;
    return p;
}

void mnv_aligned_free(void *p) { free(p); }

char *mnv_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

char *mnv_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t o = a;
    if (a && dir[a - 1] != '/') p[o++] = '/';
    memcpy(p + o, name, b + 1);
    return p;
}

mnv_status mnv_read_file(const char *path, char **data_out, size_t *len_out) {
    *data_out = NULL;
    if (len_out) *len_out = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return mnv_set_error(MNV_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return mnv_set_error(MNV_ERR_IO, "%s: cannot seek", path);
    }
    long n = ftell(f);
    if (n < 0) {
        fclose(f);
        return mnv_set_error(MNV_ERR_IO, "%s: cannot tell size", path);
    }
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    if (!buf) {
        fclose(f);
        return mnv_set_error(MNV_ERR_NOMEM, "%s: cannot allocate %ld bytes", path, n);
    }
    if (n && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        fclose(f);
        return mnv_set_error(MNV_ERR_IO, "%s: short read", path);
    }
    fclose(f);
    buf[n] = 0;
    *data_out = buf;
    if (len_out) *len_out = (size_t)n;
    return MNV_OK;
}
