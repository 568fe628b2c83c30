// minerva.h compiled as C++: the header must need nothing C-only and declare
// its functions extern "C" (this links against the C library, so a missing
// guard fails at link time with mangled names).
#include "minerva.h"

#include <cstdio>
#include <cstring>

int main() {
    int fail = 0;
    mnv_model_params mp = mnv_model_params_default();
    mnv_session_params sp = mnv_session_params_default();
    mnv_generate_params gp = mnv_generate_params_default();
    if (mp.size != sizeof mp || sp.size != sizeof sp || gp.size != sizeof gp) fail++;
    if (std::strcmp(mnv_status_str(MNV_OK), "ok") != 0) fail++;
    if (std::strcmp(mnv_status_str(MNV_ERR_CANCELLED), "cancelled") != 0) fail++;
    char want[32];
    std::snprintf(want, sizeof want, "%d.%d.%d", MNV_VERSION_MAJOR, MNV_VERSION_MINOR, MNV_VERSION_PATCH);
    if (std::strcmp(mnv_version(), want) != 0) fail++;
    mnv_model *model = nullptr;
    if (mnv_model_load("no/such/dir", &mp, &model) == MNV_OK || model != nullptr) fail++;
    if (mnv_last_error()[0] == '\0') fail++;
    std::printf("%s\n", fail ? "FAIL: the header as C++" : "1 passed, 0 failed");
    return fail ? 1 : 0;
}
