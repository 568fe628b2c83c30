/* Fuzz target: mnv_config_parse then mnv_config_parse_generation on the same
 * arbitrary bytes. A parsed config must satisfy the documented invariants. */
#include <stddef.h>
#include <stdint.h>

#include "io/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mnv_model_config cfg;
    const char *text = (const char *)data;
    if (mnv_config_parse(text, size, "fuzz/config.json", &cfg) == MNV_OK) {
        if (cfg.num_hidden_layers < 1 || cfg.num_hidden_layers > MNV_MAX_LAYERS) __builtin_trap();
        if (cfg.num_key_value_heads < 1 || cfg.num_attention_heads % cfg.num_key_value_heads)
            __builtin_trap();
        if (cfg.head_dim < 1 || !(cfg.rms_norm_eps > 0) || !(cfg.rope.theta > 0)) __builtin_trap();
        if (cfg.n_eos < 0 || cfg.n_eos > MNV_MAX_EOS) __builtin_trap();
    } else if (!mnv_last_error()[0]) {
        __builtin_trap();
    }
    mnv_config_parse_generation(text, size, "fuzz/generation_config.json", &cfg);
    if (cfg.n_eos < 0 || cfg.n_eos > MNV_MAX_EOS) __builtin_trap();
    return 0;
}
