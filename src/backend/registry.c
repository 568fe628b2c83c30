/* The only file that knows every backend. */
#include <string.h>

#include "backend/backend.h"

mnv_status mnv_backend_create(const mnv_backend_params *p, mnv_backend **out) {
    *out = NULL;
    const char *name = p && p->name ? p->name : "cpu";
    mnv_backend_params dflt = {.name = "cpu"};
    if (strcmp(name, "cpu") == 0) return mnv_backend_cpu_create(p ? p : &dflt, out);
    return mnv_set_error(MNV_ERR_UNSUPPORTED, "backend '%s' is not built in", name);
}

void mnv_backend_free(mnv_backend *b) {
    if (b) b->iface->free(b);
}
