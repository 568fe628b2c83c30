/* The only file that knows every backend. */
#include <string.h>

#include "backend/backend.h"

mnv_status mnv_backend_create(const mnv_backend_params *p, mnv_backend **out) {
    *out = NULL;
    const char *name = p && p->name ? p->name : "cpu";
    mnv_backend_params dflt = {.name = "cpu"};
    mnv_status st;
    if (strcmp(name, "cpu") == 0)
        st = mnv_backend_cpu_create(p ? p : &dflt, out);
    else
        return mnv_set_error(MNV_ERR_UNSUPPORTED, "backend '%s' is not built in", name);
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
