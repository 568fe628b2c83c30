/* The only file that knows every backend. */
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"

/* Backends added at run time (tests), and the name used when none is given. */
#define MAX_EXTRA 4
static struct {
    char name[32];
    mnv_backend_ctor create;
} extra[MAX_EXTRA];
static int n_extra;
static char default_name[32] = "cpu";

mnv_status mnv__backend_register(const char *name, mnv_backend_ctor create) {
    if (!name || !create || strlen(name) >= sizeof extra[0].name || !strcmp(name, "cpu"))
        return mnv_set_error(MNV_ERR_INVALID_ARG, "backend register: bad name or constructor");
    for (int i = 0; i < n_extra && i < MAX_EXTRA; i++)
        if (!strcmp(extra[i].name, name)) {
            extra[i].create = create;
            return MNV_OK;
        }
    if (n_extra == MAX_EXTRA) return mnv_set_error(MNV_ERR_RANGE, "backend register: %d backends already", MAX_EXTRA);
    strcpy(extra[n_extra].name, name);
    extra[n_extra++].create = create;
    return MNV_OK;
}

mnv_status mnv__backend_set_default(const char *name) {
    if (!name || strlen(name) >= sizeof default_name)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "backend default: bad name");
    strcpy(default_name, name);
    return MNV_OK;
}

/* The built-in backends. */
static const struct {
    const char *name;
    mnv_backend_ctor create;
} builtin[] = {
    {"cpu", mnv_backend_cpu_create},
#ifdef MNV_HAVE_CUDA
    {"cuda", mnv_backend_cuda_create},
#endif
};

/* "name" or "name:N" (a device index) -> base name and index. */
static mnv_status split_name(const char *full, char *base, size_t cap, int32_t *device) {
    const char *colon = strchr(full, ':');
    size_t len = colon ? (size_t)(colon - full) : strlen(full);
    *device = 0;
    if (len == 0 || len >= cap) return mnv_set_error(MNV_ERR_INVALID_ARG, "backend '%s': bad name", full);
    memcpy(base, full, len);
    base[len] = 0;
    if (!colon) return MNV_OK;
    char *end = NULL;
    long v = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || v < 0 || v > 1023)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "backend '%s': the device index after ':' must be 0-1023", full);
    *device = (int32_t)v;
    return MNV_OK;
}

mnv_status mnv_backend_create(const mnv_backend_params *p, mnv_backend **out) {
    *out = NULL;
    const char *full = p && p->name ? p->name : default_name;
    char name[32];
    int32_t device = 0;
    mnv_status st0 = split_name(full, name, sizeof name, &device);
    if (st0 != MNV_OK) return st0;
    mnv_backend_params q = {.name = full};
    if (p) q = *p;
    q.name = full;
    q.device = device;
    mnv_backend_ctor create = NULL;
    for (size_t i = 0; !create && i < sizeof builtin / sizeof builtin[0]; i++)
        if (!strcmp(builtin[i].name, name)) create = builtin[i].create;
    for (int i = 0; !create && i < n_extra && i < MAX_EXTRA; i++)
        if (!strcmp(extra[i].name, name)) create = extra[i].create;
    if (!create) return mnv_set_error(MNV_ERR_UNSUPPORTED, "backend '%s' is not built in", name);
    mnv_status st = create(&q, out);
    if (st == MNV_OK && (*out)->iface->version != MNV_BACKEND_IFACE_VERSION) {
        uint32_t v = (*out)->iface->version;
        mnv_backend_free(*out);
        *out = NULL;
        return mnv_set_error(MNV_ERR_INTERNAL, "backend '%s' implements interface version %u, not %d", name, v,
                             MNV_BACKEND_IFACE_VERSION);
    }
    return st;
}

void mnv_backend_free(mnv_backend *b) {
    if (b) b->iface->free(b);
}
