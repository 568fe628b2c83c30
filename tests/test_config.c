/* config.json / generation_config.json: real configurations of each
 * supported family, rope variants, the generation merge, and bad values that
 * must each fail with a message naming the key. */
#include <cjson/cJSON.h>
#include <stdio.h>

#include "io/config.h"
#include "test.h"

static const char *const LLAMA31 =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"attention_bias\": false, \"attention_dropout\": 0.0,"
    " \"bos_token_id\": 128000, \"eos_token_id\": [128001, 128008, 128009], \"hidden_act\": \"silu\","
    " \"hidden_size\": 4096, \"initializer_range\": 0.02, \"intermediate_size\": 14336,"
    " \"max_position_embeddings\": 131072, \"mlp_bias\": false, \"model_type\": \"llama\","
    " \"num_attention_heads\": 32, \"num_hidden_layers\": 32, \"num_key_value_heads\": 8,"
    " \"pretraining_tp\": 1, \"rms_norm_eps\": 1e-05, \"rope_scaling\": {\"factor\": 8.0,"
    " \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192,"
    " \"rope_type\": \"llama3\"}, \"rope_theta\": 500000.0, \"tie_word_embeddings\": false,"
    " \"torch_dtype\": \"bfloat16\", \"transformers_version\": \"4.43.0.dev0\", \"use_cache\": true,"
    " \"vocab_size\": 128256}";

static const char *const QWEN25 =
    "{\"architectures\": [\"Qwen2ForCausalLM\"], \"attention_dropout\": 0.0, \"bos_token_id\": 151643,"
    " \"eos_token_id\": 151645, \"hidden_act\": \"silu\", \"hidden_size\": 896,"
    " \"initializer_range\": 0.02, \"intermediate_size\": 4864, \"max_position_embeddings\": 32768,"
    " \"max_window_layers\": 21, \"model_type\": \"qwen2\", \"num_attention_heads\": 14,"
    " \"num_hidden_layers\": 24, \"num_key_value_heads\": 2, \"rms_norm_eps\": 1e-06,"
    " \"rope_theta\": 1000000.0, \"sliding_window\": 32768, \"tie_word_embeddings\": true,"
    " \"torch_dtype\": \"bfloat16\", \"transformers_version\": \"4.43.1\", \"use_cache\": true,"
    " \"use_sliding_window\": false, \"vocab_size\": 151936}";

static const char *const QWEN3 =
    "{\"architectures\": [\"Qwen3ForCausalLM\"], \"attention_bias\": false, \"attention_dropout\": 0.0,"
    " \"bos_token_id\": 151643, \"eos_token_id\": 151645, \"head_dim\": 128, \"hidden_act\": \"silu\","
    " \"hidden_size\": 1024, \"initializer_range\": 0.02, \"intermediate_size\": 3072,"
    " \"max_position_embeddings\": 40960, \"max_window_layers\": 28, \"model_type\": \"qwen3\","
    " \"num_attention_heads\": 16, \"num_hidden_layers\": 28, \"num_key_value_heads\": 8,"
    " \"rms_norm_eps\": 1e-06, \"rope_scaling\": null, \"rope_theta\": 1000000,"
    " \"sliding_window\": null, \"tie_word_embeddings\": true, \"torch_dtype\": \"bfloat16\","
    " \"transformers_version\": \"4.51.0\", \"use_cache\": true, \"use_sliding_window\": false,"
    " \"vocab_size\": 151936}";

#define GPT_OSS_LAYER_TYPES                                                                        \
    "[\"sliding_attention\", \"full_attention\", \"sliding_attention\", \"full_attention\","     \
    " \"sliding_attention\", \"full_attention\", \"sliding_attention\", \"full_attention\","     \
    " \"sliding_attention\", \"full_attention\", \"sliding_attention\", \"full_attention\","     \
    " \"sliding_attention\", \"full_attention\", \"sliding_attention\", \"full_attention\","     \
    " \"sliding_attention\", \"full_attention\", \"sliding_attention\", \"full_attention\","     \
    " \"sliding_attention\", \"full_attention\", \"sliding_attention\", \"full_attention\"]"

static const char *const GPT_OSS_20B =
    "{\"architectures\": [\"GptOssForCausalLM\"], \"attention_bias\": true, \"attention_dropout\": 0.0,"
    " \"eos_token_id\": 200002, \"experts_per_token\": 4, \"head_dim\": 64, \"hidden_act\": \"silu\","
    " \"hidden_size\": 2880, \"initial_context_length\": 4096, \"initializer_range\": 0.02,"
    " \"intermediate_size\": 2880, \"layer_types\": " GPT_OSS_LAYER_TYPES ","
    " \"max_position_embeddings\": 131072, \"model_type\": \"gpt_oss\", \"num_attention_heads\": 64,"
    " \"num_experts_per_tok\": 4, \"num_hidden_layers\": 24, \"num_key_value_heads\": 8,"
    " \"num_local_experts\": 32, \"output_router_logits\": false, \"pad_token_id\": 199999,"
    " \"quantization_config\": {\"modules_to_not_convert\": [\"model.layers.*.self_attn\","
    " \"model.layers.*.mlp.router\", \"model.embed_tokens\", \"lm_head\"], \"quant_method\": \"mxfp4\"},"
    " \"rms_norm_eps\": 1e-05, \"rope_scaling\": {\"beta_fast\": 32.0, \"beta_slow\": 1.0,"
    " \"factor\": 32.0, \"original_max_position_embeddings\": 4096, \"rope_type\": \"yarn\","
    " \"truncate\": false}, \"rope_theta\": 150000, \"router_aux_loss_coef\": 0.9,"
    " \"sliding_window\": 128, \"swiglu_limit\": 7.0, \"tie_word_embeddings\": false,"
    " \"transformers_version\": \"4.55.0.dev0\", \"use_cache\": true, \"vocab_size\": 201088}";

/* transformers >= 5 layout: rope_theta and the type inside rope_parameters, "dtype". */
static const char *const GPT_OSS_V5 =
    "{\"model_type\": \"gpt_oss\", \"hidden_size\": 2880, \"intermediate_size\": 2880,"
    " \"num_hidden_layers\": 24, \"num_attention_heads\": 64, \"num_key_value_heads\": 8,"
    " \"head_dim\": 64, \"vocab_size\": 201088, \"num_local_experts\": 32, \"num_experts_per_tok\": 4,"
    " \"sliding_window\": 128, \"layer_types\": " GPT_OSS_LAYER_TYPES ", \"dtype\": \"bfloat16\","
    " \"rope_parameters\": {\"rope_type\": \"yarn\", \"rope_theta\": 150000.0, \"factor\": 32.0,"
    " \"beta_fast\": 32.0, \"beta_slow\": 1.0, \"original_max_position_embeddings\": 4096,"
    " \"truncate\": false}, \"eos_token_id\": 200002, \"max_position_embeddings\": 131072,"
    " \"tie_word_embeddings\": false, \"rms_norm_eps\": 1e-05}";

static const char *const MISTRAL =
    "{\"architectures\": [\"MistralForCausalLM\"], \"bos_token_id\": 1, \"eos_token_id\": 2,"
    " \"hidden_act\": \"silu\", \"hidden_size\": 4096, \"initializer_range\": 0.02,"
    " \"intermediate_size\": 14336, \"max_position_embeddings\": 32768, \"model_type\": \"mistral\","
    " \"num_attention_heads\": 32, \"num_hidden_layers\": 32, \"num_key_value_heads\": 8,"
    " \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, \"sliding_window\": 4096,"
    " \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\", \"vocab_size\": 32000}";

static mnv_status parse(const char *json, mnv_model_config *c) {
    return mnv_config_parse(json, strlen(json), "config.json", c);
}

static void test_stories_dir(void) {
    mnv_model_config c;
    mnv_status st = mnv_config_load_dir("fixtures/io/stories260K", &c);
    CHECKF(st == MNV_OK, "%s", mnv_last_error());
    CHECK(c.arch == MNV_ARCH_LLAMA && strcmp(c.model_type, "llama") == 0);
    CHECK(c.hidden_size == 64 && c.intermediate_size == 172 && c.num_hidden_layers == 5);
    CHECK(c.num_attention_heads == 8 && c.num_key_value_heads == 4 && c.head_dim == 8);
    CHECK(c.vocab_size == 512 && c.max_position_embeddings == 512);
    CHECK(c.rms_norm_eps == 1e-5 && c.rope.theta == 10000.0 && c.rope.type == MNV_ROPE_DEFAULT);
    CHECK(c.rope.factor == 1.0 && c.rope.partial_rotary_factor == 1.0 && !c.rope.traditional);
    CHECK(c.tie_word_embeddings == 1 && c.attention_bias == 0 && c.o_bias == 0 && c.mlp_bias == 0);
    CHECK(c.qk_norm == 0 && strcmp(c.hidden_act, "silu") == 0 && c.torch_dtype == MNV_DTYPE_F32);
    CHECK(c.bos_token_id == 1 && c.n_eos == 1 && c.eos_token_ids[0] == 2);
    CHECK(c.sliding_window == 0 && c.num_local_experts == 0);
    st = mnv_config_load_dir("fixtures/io/no-such-model", &c);
    CHECK(st == MNV_ERR_IO && strstr(mnv_last_error(), "no-such-model/config.json"));
}

static void test_llama3(void) {
    mnv_model_config c;
    CHECKF(parse(LLAMA31, &c) == MNV_OK, "%s", mnv_last_error());
    CHECK(c.arch == MNV_ARCH_LLAMA && c.head_dim == 128 && c.num_key_value_heads == 8);
    CHECK(c.rope.type == MNV_ROPE_LLAMA3 && c.rope.theta == 500000.0 && c.rope.factor == 8.0);
    CHECK(c.rope.low_freq_factor == 1.0 && c.rope.high_freq_factor == 4.0);
    CHECK(c.rope.original_max_pos == 8192);
    CHECK(c.tie_word_embeddings == 0 && c.torch_dtype == MNV_DTYPE_BF16);
    CHECK(c.bos_token_id == 128000 && c.n_eos == 3 && c.eos_token_ids[2] == 128009);
    CHECK(c.max_position_embeddings == 131072 && c.rms_norm_eps == 1e-5);
}

static void check_gpt_oss(const mnv_model_config *c) {
    CHECK(c->arch == MNV_ARCH_GPT_OSS && strcmp(c->model_type, "gpt_oss") == 0);
    CHECK(c->num_hidden_layers == 24 && c->hidden_size == 2880 && c->intermediate_size == 2880);
    CHECK(c->num_attention_heads == 64 && c->num_key_value_heads == 8 && c->head_dim == 64);
    CHECK(c->vocab_size == 201088 && c->max_position_embeddings == 131072);
    CHECK(c->num_local_experts == 32 && c->num_experts_per_tok == 4 && c->swiglu_limit == 7.0);
    CHECK(c->sliding_window == 128);
    int ok = 1;
    for (int i = 0; i < 24; i++) ok &= c->layer_sliding[i] == (i % 2 == 0);
    CHECK(ok && c->layer_sliding[24] == 0);
    CHECK(c->rope.type == MNV_ROPE_YARN && c->rope.theta == 150000.0 && c->rope.factor == 32.0);
    CHECK(c->rope.beta_fast == 32.0 && c->rope.beta_slow == 1.0 && c->rope.truncate == 0);
    CHECK(c->rope.original_max_pos == 4096 && c->rope.mscale == 1.0 && c->rope.mscale_all_dim == 0);
    CHECK(c->attention_bias == 1 && c->o_bias == 1 && c->tie_word_embeddings == 0);
    CHECK(c->n_eos == 1 && c->eos_token_ids[0] == 200002 && c->bos_token_id == -1);
    CHECK(c->rms_norm_eps == 1e-5 && c->qk_norm == 0);
}

static void test_gpt_oss(void) {
    mnv_model_config c;
    CHECKF(parse(GPT_OSS_20B, &c) == MNV_OK, "%s", mnv_last_error());
    check_gpt_oss(&c);
    CHECK(c.torch_dtype == MNV_DTYPE_F32); /* the HF 20b config carries no torch_dtype */
    CHECKF(parse(GPT_OSS_V5, &c) == MNV_OK, "%s", mnv_last_error());
    check_gpt_oss(&c);
    CHECK(c.torch_dtype == MNV_DTYPE_BF16);
    /* generation_config.json as published: bos and a list of stop ids */
    const char *gen = "{\"bos_token_id\": 199998, \"do_sample\": true,"
                      " \"eos_token_id\": [200002, 199999, 200012], \"pad_token_id\": 199999}";
    CHECK(mnv_config_parse_generation(gen, strlen(gen), "generation_config.json", &c) == MNV_OK);
    CHECK(c.bos_token_id == 199998 && c.n_eos == 3);
    CHECK(c.eos_token_ids[0] == 200002 && c.eos_token_ids[1] == 199999 && c.eos_token_ids[2] == 200012);
}

static void test_qwen(void) {
    mnv_model_config c;
    CHECKF(parse(QWEN25, &c) == MNV_OK, "%s", mnv_last_error());
    CHECK(c.arch == MNV_ARCH_QWEN2 && c.head_dim == 64 && c.num_key_value_heads == 2);
    CHECK(c.attention_bias == 1 && c.o_bias == 0 && c.mlp_bias == 0 && c.qk_norm == 0);
    CHECK(c.rope.theta == 1e6 && c.tie_word_embeddings == 1 && c.rms_norm_eps == 1e-6);
    CHECK(c.sliding_window == 32768 && c.layer_sliding[0] == 0 && c.n_eos == 1);
    CHECKF(parse(QWEN3, &c) == MNV_OK, "%s", mnv_last_error());
    CHECK(c.arch == MNV_ARCH_QWEN3 && c.head_dim == 128 && c.hidden_size == 1024);
    CHECK(c.qk_norm == 1 && c.attention_bias == 0 && c.o_bias == 0);
    CHECK(c.rope.theta == 1e6 && c.rope.type == MNV_ROPE_DEFAULT && c.sliding_window == 0);
    CHECK(c.max_position_embeddings == 40960 && c.eos_token_ids[0] == 151645);
    CHECKF(parse(MISTRAL, &c) == MNV_OK, "%s", mnv_last_error());
    CHECK(c.arch == MNV_ARCH_LLAMA && strcmp(c.model_type, "mistral") == 0 && c.head_dim == 128);
    /* Mistral's window applies to every layer, as transformers applies it */
    CHECK(c.sliding_window == 4096 && c.layer_sliding[0] == 1 && c.attention_bias == 0);
    CHECK(c.layer_sliding[c.num_hidden_layers - 1] == 1);
}

/* A copy of base with key (dotted path) set to val, or removed when val is NULL. */
static char *edit(const char *base, const char *key, cJSON *val) {
    cJSON *root = cJSON_Parse(base), *obj = root;
    char path[128];
    snprintf(path, sizeof path, "%s", key);
    char *leaf = path, *dot;
    while ((dot = strchr(leaf, '.'))) {
        *dot = 0;
        obj = cJSON_GetObjectItemCaseSensitive(obj, leaf);
        leaf = dot + 1;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(obj, leaf);
    if (val) cJSON_AddItemToObject(obj, leaf, val);
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

static void expect_bad(const char *base, const char *key, cJSON *val, mnv_status want,
                       const char *frag) {
    char *json = edit(base, key, val);
    mnv_model_config c;
    mnv_status st = parse(json, &c);
    const char *msg = mnv_last_error();
    CHECKF(st == want, "%s: got %s, want %s (%s)", key, mnv_status_str(st), mnv_status_str(want), msg);
    CHECKF(strstr(msg, "config.json") != NULL, "no file name: %s", msg);
    CHECKF(strstr(msg, frag) != NULL, "'%s' not in: %s", frag, msg);
    free(json);
}

static cJSON *json(const char *text) { return cJSON_Parse(text); }

static void test_bad_values(void) {
    const mnv_status F = MNV_ERR_FORMAT, U = MNV_ERR_UNSUPPORTED;
    expect_bad(LLAMA31, "hidden_size", json("\"4096\""), F, "key 'hidden_size': expected a positive integer");
    expect_bad(LLAMA31, "hidden_size", json("-1"), F, "'hidden_size'");
    expect_bad(LLAMA31, "hidden_size", json("4096.5"), F, "'hidden_size'");
    expect_bad(LLAMA31, "hidden_size", NULL, F, "missing key 'hidden_size'");
    expect_bad(LLAMA31, "vocab_size", json("0"), F, "'vocab_size'");
    expect_bad(LLAMA31, "vocab_size", json("1e12"), F, "'vocab_size'");
    expect_bad(LLAMA31, "num_hidden_layers", json("1000"), F, "'num_hidden_layers': expected a positive integer no larger than 512");
    expect_bad(LLAMA31, "num_key_value_heads", json("5"), F, "'num_key_value_heads': 5 does not divide");
    expect_bad(LLAMA31, "num_attention_heads", json("24"), F, "'hidden_size': 4096 is not divisible");
    expect_bad(LLAMA31, "rms_norm_eps", json("0"), F, "'rms_norm_eps'");
    expect_bad(LLAMA31, "rms_norm_eps", json("\"1e-5\""), F, "'rms_norm_eps'");
    expect_bad(LLAMA31, "rope_theta", json("-5"), F, "'rope_theta'");
    expect_bad(LLAMA31, "rope_scaling", json("[1]"), F, "'rope_scaling'");
    expect_bad(LLAMA31, "rope_scaling.rope_type", json("\"longrope\""), U, "'longrope'");
    expect_bad(LLAMA31, "rope_scaling.factor", json("-8"), F, "'rope_scaling.factor'");
    expect_bad(LLAMA31, "rope_scaling.high_freq_factor", json("0.5"), F, "'rope_scaling.high_freq_factor'");
    expect_bad(LLAMA31, "rope_scaling.original_max_position_embeddings", json("\"8k\""), F,
               "'rope_scaling.original_max_position_embeddings'");
    expect_bad(LLAMA31, "model_type", json("\"phi3\""), U, "'phi3'");
    expect_bad(LLAMA31, "model_type", NULL, F, "missing key 'model_type'");
    expect_bad(LLAMA31, "model_type", json("7"), F, "'model_type'");
    expect_bad(LLAMA31, "eos_token_id", json("[1,2,3,4,5,6,7,8,9]"), F, "'eos_token_id': more than 8");
    expect_bad(LLAMA31, "eos_token_id", json("\"2\""), F, "'eos_token_id'");
    expect_bad(LLAMA31, "eos_token_id", json("[1, -2]"), F, "'eos_token_id': entry 1");
    expect_bad(LLAMA31, "bos_token_id", json("true"), F, "'bos_token_id'");
    expect_bad(LLAMA31, "tie_word_embeddings", json("\"yes\""), F, "'tie_word_embeddings'");
    expect_bad(LLAMA31, "attention_bias", json("1"), F, "'attention_bias'");
    expect_bad(LLAMA31, "torch_dtype", json("\"float8_e4m3\""), U, "'torch_dtype'");
    expect_bad(LLAMA31, "torch_dtype", json("16"), F, "'torch_dtype'");
    expect_bad(LLAMA31, "hidden_act", json("[\"silu\"]"), F, "'hidden_act'");
    expect_bad(LLAMA31, "partial_rotary_factor", json("1.5"), F, "'partial_rotary_factor'");
    expect_bad(QWEN3, "head_dim", NULL, F, "missing key 'head_dim'");
    expect_bad(QWEN3, "rope_theta", NULL, F, "missing key 'rope_theta'");
    expect_bad(QWEN3, "head_dim", json("0"), F, "'head_dim'");
    expect_bad(GPT_OSS_20B, "layer_types", json("[\"full_attention\"]"), F, "'layer_types': 1 entries");
    expect_bad(GPT_OSS_20B, "layer_types", json("\"sliding\""), F, "'layer_types'");
    expect_bad(GPT_OSS_20B, "sliding_window", NULL, F, "'sliding_window'");
    expect_bad(GPT_OSS_20B, "sliding_window", json("-128"), F, "'sliding_window'");
    expect_bad(GPT_OSS_20B, "num_local_experts", NULL, F, "missing key 'num_local_experts'");
    expect_bad(GPT_OSS_20B, "num_experts_per_tok", json("33"), F, "'num_experts_per_tok': 33 exceeds");
    expect_bad(GPT_OSS_20B, "swiglu_limit", json("0"), F, "'swiglu_limit'");
    expect_bad(GPT_OSS_20B, "rope_scaling.truncate", json("\"no\""), F, "'rope_scaling.truncate'");
    expect_bad(GPT_OSS_20B, "rope_scaling.beta_fast", json("\"x\""), F, "'rope_scaling.beta_fast'");
    expect_bad(GPT_OSS_V5, "rope_parameters.rope_theta", json("0"), F, "'rope_parameters.rope_theta'");
    expect_bad(GPT_OSS_V5, "rope_parameters.rope_type", json("\"mrope\""), U, "'rope_parameters.rope_type'");
    expect_bad(GPT_OSS_V5, "dtype", json("\"float64\""), U, "'dtype'");
}

static void test_bad_json(void) {
    mnv_model_config c;
    const char *cases[] = {"", "{", "[]", "null", "{\"model_type\": \"llama\"} x", "\"llama\""};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mnv_status st = parse(cases[i], &c);
        CHECKF(st == MNV_ERR_FORMAT, "case %zu: %s", i, mnv_status_str(st));
        CHECK(strncmp(mnv_last_error(), "config.json: ", 13) == 0);
    }
    /* length is honoured: the text need not be NUL-terminated */
    char buf[4096];
    size_t n = strlen(QWEN3);
    memcpy(buf, QWEN3, n);
    memset(buf + n, '}', 16);
    CHECK(mnv_config_parse(buf, n, "config.json", &c) == MNV_OK);
    CHECK(mnv_config_parse(buf, n + 1, "config.json", &c) == MNV_ERR_FORMAT);
}

static void test_defaults_and_variants(void) {
    mnv_model_config c;
    char *j = edit(QWEN25, "rope_theta", NULL);
    CHECK(parse(j, &c) == MNV_OK && c.rope.theta == 1e6); /* qwen2 default */
    free(j);
    j = edit(LLAMA31, "rope_theta", NULL);
    CHECK(parse(j, &c) == MNV_OK && c.rope.theta == 10000.0); /* llama default */
    free(j);
    j = edit(LLAMA31, "tie_word_embeddings", NULL);
    CHECK(parse(j, &c) == MNV_OK && c.tie_word_embeddings == -1);
    free(j);
    j = edit(LLAMA31, "rope_scaling", json("{\"type\": \"linear\", \"factor\": 2.0}"));
    CHECK(parse(j, &c) == MNV_OK && c.rope.type == MNV_ROPE_LINEAR && c.rope.factor == 2.0);
    free(j);
    j = edit(LLAMA31, "rope_scaling", json("{\"type\": \"dynamic\", \"factor\": 4.0}"));
    CHECK(parse(j, &c) == MNV_OK && c.rope.type == MNV_ROPE_DYNAMIC);
    CHECK(c.rope.original_max_pos == 131072); /* defaults to max_position_embeddings */
    free(j);
    j = edit(LLAMA31, "attention_bias", json("true"));
    CHECK(parse(j, &c) == MNV_OK && c.attention_bias == 1 && c.o_bias == 1);
    free(j);
    j = edit(LLAMA31, "num_key_value_heads", NULL);
    CHECK(parse(j, &c) == MNV_OK && c.num_key_value_heads == 32);
    free(j);
    j = edit(LLAMA31, "bos_token_id", json("null"));
    CHECK(parse(j, &c) == MNV_OK && c.bos_token_id == -1);
    free(j);
    j = edit(LLAMA31, "rope_traditional", json("true"));
    CHECK(parse(j, &c) == MNV_OK && c.rope.traditional == 1);
    free(j);
    /* transformers v5 llama: rope_parameters with only the default type and theta */
    j = edit(LLAMA31, "rope_scaling", NULL);
    char *k = edit(j, "rope_theta", NULL);
    free(j);
    j = edit(k, "rope_parameters", json("{\"rope_type\": \"default\", \"rope_theta\": 25000.0}"));
    CHECK(parse(j, &c) == MNV_OK && c.rope.theta == 25000.0 && c.rope.type == MNV_ROPE_DEFAULT);
    free(j);
    free(k);
    /* experts_per_token alone (the original gpt-oss spelling) */
    j = edit(GPT_OSS_20B, "num_experts_per_tok", NULL);
    CHECK(parse(j, &c) == MNV_OK && c.num_experts_per_tok == 4);
    free(j);
}

static void test_generation(void) {
    mnv_model_config c;
    CHECK(parse(LLAMA31, &c) == MNV_OK);
    const char *g1 = "{\"bos_token_id\": 5, \"eos_token_id\": 7}";
    CHECK(mnv_config_parse_generation(g1, strlen(g1), "generation_config.json", &c) == MNV_OK);
    CHECK(c.bos_token_id == 5 && c.n_eos == 1 && c.eos_token_ids[0] == 7);
    const char *g2 = "{\"bos_token_id\": null, \"temperature\": 0.6}";
    CHECK(mnv_config_parse_generation(g2, strlen(g2), "generation_config.json", &c) == MNV_OK);
    CHECK(c.bos_token_id == 5 && c.n_eos == 1); /* absent or null keys change nothing */
    const char *g3 = "{\"bos_token_id\": 1, \"eos_token_id\": [1, \"2\"]}";
    CHECK(mnv_config_parse_generation(g3, strlen(g3), "generation_config.json", &c) == MNV_ERR_FORMAT);
    CHECK(strstr(mnv_last_error(), "generation_config.json: key 'eos_token_id'") != NULL);
    CHECK(c.bos_token_id == 5 && c.eos_token_ids[0] == 7); /* a failed merge leaves cfg as it was */
    const char *g4 = "{\"eos_token_id\": []}";
    CHECK(mnv_config_parse_generation(g4, strlen(g4), "generation_config.json", &c) == MNV_OK);
    CHECK(c.n_eos == 0);
    CHECK(mnv_config_parse_generation("[", 1, "generation_config.json", &c) == MNV_ERR_FORMAT);
}

int main(void) {
    test_stories_dir();
    test_llama3();
    test_gpt_oss();
    test_qwen();
    test_bad_values();
    test_bad_json();
    test_defaults_and_variants();
    test_generation();
    return t_done();
}
