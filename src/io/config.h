/* config.json / generation_config.json of Hugging Face and mlx-community
 * models, parsed into one plain struct. */
#ifndef MNV_CONFIG_H
#define MNV_CONFIG_H

#include "core/core.h"
#include "quant/quant.h"

typedef enum {
    MNV_ARCH_LLAMA = 0, /* llama, mistral */
    MNV_ARCH_QWEN2,
    MNV_ARCH_QWEN3,
    MNV_ARCH_GPT_OSS,
    MNV_ARCH_COUNT
} mnv_arch;

typedef enum {
    MNV_ROPE_DEFAULT = 0,
    MNV_ROPE_LINEAR,
    MNV_ROPE_LLAMA3,
    MNV_ROPE_YARN,
    MNV_ROPE_DYNAMIC
} mnv_rope_type;

typedef struct {
    mnv_rope_type type;
    double theta;                 /* rope_theta (also read from rope_parameters) */
    double factor;                /* 1 if absent */
    double low_freq_factor;       /* llama3, default 1 */
    double high_freq_factor;      /* llama3, default 4 */
    int64_t original_max_pos;     /* llama3 / yarn original_max_position_embeddings */
    double beta_fast, beta_slow;  /* yarn, defaults 32, 1 */
    double mscale, mscale_all_dim;/* yarn, defaults 1, 0 */
    int truncate;                 /* yarn: 1 unless "truncate": false */
    double partial_rotary_factor; /* 1 if absent */
    int traditional;              /* rope_traditional (mlx): interleaved pairs */
} mnv_rope_config;

#define MNV_MAX_EOS 8
#define MNV_MAX_LAYERS 512
#define MNV_MAX_QUANT_OVERRIDES 512

/* A per-module entry of config.json "quantization" (mlx-lm): either the
 * module's own parameters or `false` (left unquantized). */
typedef struct {
    char path[96];          /* module path without ".weight" */
    int32_t enabled;        /* 0: the entry was false */
    mnv_qmode mode;         /* an entry without "mode" means affine */
    int32_t bits, group_size;
} mnv_quant_override;

typedef struct {
    char model_type[32];          /* as written: "llama", "mistral", "qwen2", ... */
    mnv_arch arch;
    int32_t vocab_size;
    int32_t hidden_size;
    int32_t intermediate_size;
    int32_t num_hidden_layers;
    int32_t num_attention_heads;
    int32_t num_key_value_heads;  /* defaults to num_attention_heads */
    int32_t head_dim;             /* defaults to hidden/heads (qwen3 requires it) */
    int32_t max_position_embeddings;
    double rms_norm_eps;
    mnv_rope_config rope;
    int32_t tie_word_embeddings;  /* 1, 0, or -1 when the key is absent */
    int32_t attention_bias;       /* q/k/v (and o for llama) biases */
    int32_t o_bias;               /* o_proj bias */
    int32_t mlp_bias;
    int32_t qk_norm;              /* qwen3 */
    char hidden_act[16];          /* "silu" (default), "gelu", ... */
    mnv_dtype torch_dtype;        /* torch_dtype / dtype; F32 if absent */
    int32_t sliding_window;       /* 0 if none */
    uint8_t layer_sliding[MNV_MAX_LAYERS]; /* 1 where layer_types says sliding_attention */
    /* gpt-oss (and other MoE) */
    int32_t num_local_experts;
    int32_t num_experts_per_tok;
    double swiglu_limit;
    /* quantization (mlx-lm "quantization", or a foreign "quantization_config"
     * with quant_method mxfp4): q_mode NONE when the model is not quantized */
    mnv_qmode q_mode;
    int32_t q_bits, q_group_size;
    int32_t n_q_overrides;
    mnv_quant_override q_overrides[MNV_MAX_QUANT_OVERRIDES];
    /* token ids: config.json, overridden by generation_config.json */
    int32_t bos_token_id;         /* -1 if none */
    int32_t n_eos;
    int32_t eos_token_ids[MNV_MAX_EOS];
} mnv_model_config;

/* Parse config.json text. `fname` names the file in errors. Missing required
 * keys, wrong JSON types and out-of-range values give MNV_ERR_FORMAT naming
 * the key; unknown model_type gives MNV_ERR_UNSUPPORTED. */
mnv_status mnv_config_parse(const char *json, size_t len, const char *fname, mnv_model_config *cfg);
/* Merge generation_config.json text (eos_token_id int or list, bos_token_id). */
mnv_status mnv_config_parse_generation(const char *json, size_t len, const char *fname,
                                       mnv_model_config *cfg);
/* Quantization of the module at `path` (no ".weight"): the override entry
 * if there is one, else the top level when `has_scales` (the checkpoint
 * stores path.scales), else none. Mirrors mlx-lm's load-time rule. */
void mnv_config_module_quant(const mnv_model_config *cfg, const char *path, bool has_scales, mnv_qmode *mode,
                             int32_t *bits, int32_t *group_size);

/* Read dir/config.json and, if present, dir/generation_config.json. */
mnv_status mnv_config_load_dir(const char *dir, mnv_model_config *cfg);

#endif
