/* The only file that knows every backend. */
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

mnv_status mnv_backend_create(const mnv_backend_params *p, mnv_backend **out) {
    *out = NULL;
    const char *name = p && p->name ? p->name : default_name;
    mnv_backend_params q = {.name = name};
    if (p) {
        q = *p;
        q.name = name;
    }
    mnv_backend_ctor create = strcmp(name, "cpu") == 0 ? mnv_backend_cpu_create : NULL;
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
