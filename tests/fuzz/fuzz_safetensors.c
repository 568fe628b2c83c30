/* Fuzz target: mnv_st_parse on arbitrary bytes. Every tensor it accepts must
 * lie inside the input, which the byte sum below makes the sanitizers check. */
#include <stddef.h>
#include <stdint.h>

#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mnv_st_tensor *t = NULL;
    size_t n = 0;
    if (mnv_st_parse(data, size, "fuzz.safetensors", &t, &n) != MNV_OK) {
        if (t || n || !mnv_last_error()[0]) __builtin_trap(); /* failure: no output, a message */
        return 0;
    }
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = t[i].data;
        if (p < data || p + t[i].nbytes > data + size) __builtin_trap();
        for (uint64_t b = 0; b < t[i].nbytes; b++) sink ^= p[b];
        if (i && strcmp(t[i - 1].name, t[i].name) >= 0) __builtin_trap(); /* sorted, unique */
    }
    (void)sink;
    mnv_st_free_tensors(t, n);
    return 0;
}
