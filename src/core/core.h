/* Core internals shared by every module: errors, dtypes, half-precision
 * conversion, timing and aligned allocation. */
#ifndef MNV_CORE_H
#define MNV_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "minerva.h"

/* ---- errors ---------------------------------------------------------------
 * mnv_set_error records a printf-style message for mnv_last_error() on the
 * calling thread and returns the status, so a failure path reads
 *     return mnv_set_error(MNV_ERR_FORMAT, "%s: tensor '%s': ...", file, name);
 */
mnv_status mnv_set_error(mnv_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefix the current thread's message with "prefix: " (adds context on the way up). */
void mnv_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void mnv_clear_error(void);
/* A diagnostic for the host: to the callback of mnv_set_log_callback, else
 * to stderr as "minerva: MESSAGE". Never for errors a call returns. */
void mnv__log(mnv_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- dtypes ---------------------------------------------------------------- */
size_t mnv_dtype_size(mnv_dtype t);          /* bytes per element */
bool mnv_dtype_from_name(const char *name, mnv_dtype *out); /* "BF16" -> MNV_DTYPE_BF16 */

static inline float mnv_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint16_t mnv_f32_to_bf16(float f) { /* round to nearest even; NaN stays NaN */
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
float mnv_f16_to_f32(uint16_t h);
uint16_t mnv_f32_to_f16(float f);

/* ---- misc ------------------------------------------------------------------ */
double mnv_time_sec(void);                    /* monotonic clock */
void *mnv_aligned_alloc(size_t align, size_t size); /* free with mnv_aligned_free */
void mnv_aligned_free(void *p);
char *mnv_strdup(const char *s);
/* Read a whole file into a NUL-terminated heap buffer. */
mnv_status mnv_read_file(const char *path, char **data_out, size_t *len_out);
/* path join into a heap string: dir + "/" + name */
char *mnv_path_join(const char *dir, const char *name);

#define MNV_MIN(a, b) ((a) < (b) ? (a) : (b))
#define MNV_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
