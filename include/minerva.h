/*
 * minerva.h - the public C API of libminerva, a local LLM inference engine.
 *
 * This header is the whole contract between libminerva and its users (the
 * `minerva` command-line tool and any embedding application). It never
 * includes internal headers.
 *
 * Conventions
 *  - Every fallible call returns an mnv_status. MNV_OK (0) is success. On
 *    failure any `*_out` pointer is set to NULL (or zero) and
 *    mnv_last_error() returns a message naming the file, tensor, key or field
 *    at fault. The message is per thread: it describes the most recent failed
 *    call made on the calling thread and stays valid until that thread's next
 *    failing call.
 *  - Objects are opaque handles with paired lifecycles (`*_load`/`*_free`,
 *    `*_create`/`*_free`). Passing NULL to a `*_free` is a no-op.
 *  - Parameters come in structs obtained from a `*_default()` getter; the
 *    first field, `size`, lets the struct grow without breaking the ABI.
 *  - Nothing in the library calls exit() or abort() on bad input.
 *
 * Thread safety
 *  - An mnv_model is immutable after loading: several sessions on several
 *    threads may share one model.
 *  - An mnv_session, and an mnv_tokenizer's streaming decoder, must be used
 *    by one thread at a time.
 *  - An mnv_tokenizer is immutable after loading and may be shared.
 */
#ifndef MINERVA_H
#define MINERVA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MNV_VERSION_MAJOR 0
#define MNV_VERSION_MINOR 1
#define MNV_VERSION_PATCH 0

/* ------------------------------------------------------------------------ */
/* Status                                                                   */
/* ------------------------------------------------------------------------ */

#define MNV_STATUS_LIST(X)                                                   \
    X(MNV_OK, "ok")                                                          \
    X(MNV_ERR_INVALID_ARG, "invalid argument")                               \
    X(MNV_ERR_IO, "input/output error")                                      \
    X(MNV_ERR_FORMAT, "malformed file or data")                              \
    X(MNV_ERR_UNSUPPORTED, "unsupported feature")                            \
    X(MNV_ERR_NOMEM, "out of memory")                                        \
    X(MNV_ERR_RANGE, "value out of range")                                   \
    X(MNV_ERR_BACKEND, "backend failure")                                    \
    X(MNV_ERR_CANCELLED, "cancelled")                                        \
    X(MNV_ERR_INTERNAL, "internal error")

typedef enum {
#define MNV_X_ENUM(name, str) name,
    MNV_STATUS_LIST(MNV_X_ENUM)
#undef MNV_X_ENUM
    MNV_STATUS_COUNT
} mnv_status;

/* A static, human-readable name for a status. Never NULL. */
const char *mnv_status_str(mnv_status s);

/* The detailed message of the calling thread's most recent failure
 * (e.g. "model.safetensors: tensor 'model.norm.weight': data_offsets end
 * 4096 beyond buffer size 4000"). Never NULL; "" if there was none. */
const char *mnv_last_error(void);

/* Library version as "MAJOR.MINOR.PATCH". */
const char *mnv_version(void);

/* ------------------------------------------------------------------------ */
/* Data types                                                               */
/* ------------------------------------------------------------------------ */

typedef enum {
    MNV_DTYPE_F32 = 0,
    MNV_DTYPE_F16,
    MNV_DTYPE_BF16,
    MNV_DTYPE_I32,
    MNV_DTYPE_U32,
    MNV_DTYPE_I16,
    MNV_DTYPE_U16,
    MNV_DTYPE_I8,
    MNV_DTYPE_U8,
    MNV_DTYPE_I64,
    MNV_DTYPE_U64,
    MNV_DTYPE_F64,
    MNV_DTYPE_BOOL,
    MNV_DTYPE_COUNT
} mnv_dtype;

/* Name as written in safetensors headers ("F32", "BF16", ...). */
const char *mnv_dtype_name(mnv_dtype t);

/* ------------------------------------------------------------------------ */
/* Tokenizer                                                                */
/* ------------------------------------------------------------------------ */

typedef struct mnv_tokenizer mnv_tokenizer;

/* Load a Hugging Face tokenizer.json (BPE: byte-level or SentencePiece-style).
 * If a tokenizer_config.json sits beside it, it is read for the BOS/EOS
 * tokens and add_bos_token. On success *out owns the tokenizer; free it with
 * mnv_tokenizer_free. */
mnv_status mnv_tokenizer_load(const char *tokenizer_json_path, mnv_tokenizer **out);
void mnv_tokenizer_free(mnv_tokenizer *tok);

/* Vocabulary size including added tokens (max id + 1). */
int32_t mnv_tokenizer_n_vocab(const mnv_tokenizer *tok);
/* BOS / EOS ids, or -1 when the tokenizer defines none. */
int32_t mnv_tokenizer_bos(const mnv_tokenizer *tok);
int32_t mnv_tokenizer_eos(const mnv_tokenizer *tok);
/* 1 when tokenizer_config.json asks for a BOS token before a prompt. */
int mnv_tokenizer_add_bos(const mnv_tokenizer *tok);

/* Encode UTF-8 text (len bytes; text need not be NUL-terminated).
 * Equals Hugging Face `Tokenizer.encode(text, add_special_tokens=False)`:
 * added/special tokens written in the text are recognised. With add_bos != 0
 * and a BOS token defined, BOS is prepended.
 * Writes at most cap ids; *n_out receives the number of ids the full encoding
 * has. If that exceeds cap, returns MNV_ERR_RANGE (call again with a larger
 * buffer). ids may be NULL when cap is 0. */
mnv_status mnv_tokenize(const mnv_tokenizer *tok, const char *text, size_t len, int add_bos,
                        int32_t *ids, size_t cap, size_t *n_out);

/* Decode ids to UTF-8 text, as Hugging Face `decode(ids,
 * skip_special_tokens=skip_special)` does. Writes at most cap bytes plus a
 * terminating NUL when room allows; *len_out receives the full length
 * (excluding NUL). Returns MNV_ERR_RANGE if cap <= full length. Invalid ids
 * give MNV_ERR_RANGE naming the id. */
mnv_status mnv_detokenize(const mnv_tokenizer *tok, const int32_t *ids, size_t n, int skip_special,
                          char *text, size_t cap, size_t *len_out);

/* Streaming decoder: feed one id at a time, receive only complete UTF-8
 * characters (never half a character). Owned by the caller. */
typedef struct mnv_detok_stream mnv_detok_stream;
mnv_status mnv_detok_stream_create(const mnv_tokenizer *tok, mnv_detok_stream **out);
/* Appends the text that id completes to out (at most cap bytes) and sets
 * *len_out. 64 bytes are always enough for one token's text unless the
 * vocabulary holds longer pieces; MNV_ERR_RANGE then asks for more. */
mnv_status mnv_detok_stream_push(mnv_detok_stream *s, int32_t id, char *out, size_t cap,
                                 size_t *len_out);
/* Flushes any held incomplete bytes (as U+FFFD replacement characters). */
mnv_status mnv_detok_stream_flush(mnv_detok_stream *s, char *out, size_t cap, size_t *len_out);
void mnv_detok_stream_free(mnv_detok_stream *s);

/* ------------------------------------------------------------------------ */
/* Model                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct mnv_model mnv_model;

typedef struct {
    uint32_t size;     /* sizeof(mnv_model_params) */
    int n_threads;     /* CPU threads for compute; 0 = all online cores */
    int use_mmap;      /* 1 (default): weights are mapped, not copied */
    int load_tokenizer; /* 1 (default): tokenizer.json is loaded if present */
    uint32_t reserved[8];
} mnv_model_params;

mnv_model_params mnv_model_params_default(void);

/* Load a model directory in Hugging Face / mlx-community layout:
 * config.json, model.safetensors or model.safetensors.index.json with shards,
 * optional generation_config.json, tokenizer.json, tokenizer_config.json.
 * On success *out owns the model; free with mnv_model_free. */
mnv_status mnv_model_load(const char *dir, const mnv_model_params *params, mnv_model **out);
void mnv_model_free(mnv_model *model);

typedef struct {
    const char *arch;        /* "llama", "mistral", "qwen2", "qwen3" */
    int32_t n_vocab;
    int32_t n_ctx_train;     /* max_position_embeddings */
    int32_t n_layer;
    int32_t n_embd;          /* hidden size */
    int32_t n_ff;            /* intermediate size */
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim;
    int32_t tied_embeddings;
    int32_t bos_id;          /* -1 if none */
    int32_t n_eos;           /* number of EOS ids in eos_ids */
    int32_t eos_ids[8];
    uint64_t n_params;       /* parameters (elements of all weight tensors) */
    uint64_t weight_bytes;   /* bytes of all weight tensors */
    uint64_t kv_bytes_per_token; /* KV cache bytes per token at the default cache dtype */
} mnv_model_info;

/* Fills *info. Strings are borrowed: valid until the model is freed. */
mnv_status mnv_model_get_info(const mnv_model *model, mnv_model_info *info);

/* Estimate a model from its config.json alone, without weights: parameter
 * count, bytes of weights in the layout the config's "quantization" block
 * describes (float tensors counted at the config's torch_dtype), KV bytes
 * per token. Fills the same fields mnv_model_get_info does (arch points to
 * static storage until the next call on this thread). */
mnv_status mnv_config_estimate(const char *config_path, mnv_model_info *info);

/* The model's tokenizer, or NULL if the directory had none. Borrowed: valid
 * until the model is freed. */
const mnv_tokenizer *mnv_model_tokenizer(const mnv_model *model);

typedef struct {
    const char *name;        /* borrowed, valid until the model is freed */
    mnv_dtype dtype;
    int32_t ndim;
    int64_t shape[8];
    uint64_t nbytes;
    const char *file;        /* shard file name (not a path) */
} mnv_tensor_info;

/* Number of weight tensors and the description of tensor i (0-based,
 * sorted by name). */
size_t mnv_model_n_tensors(const mnv_model *model);
mnv_status mnv_model_tensor_info(const mnv_model *model, size_t i, mnv_tensor_info *info);

/* ------------------------------------------------------------------------ */
/* Session: a KV cache and compute state for generation                     */
/* ------------------------------------------------------------------------ */

typedef struct mnv_session mnv_session;

typedef struct {
    uint32_t size;      /* sizeof(mnv_session_params) */
    int32_t n_ctx;      /* context length in tokens; 0 = min(model's, 4096) */
    int32_t n_batch;    /* max tokens evaluated in one forward pass; 0 = 512 */
    int32_t n_threads;  /* 0 = the model's setting */
    uint32_t reserved[8];
} mnv_session_params;

mnv_session_params mnv_session_params_default(void);

/* Create a session on a model. The model must outlive the session. */
mnv_status mnv_session_create(mnv_model *model, const mnv_session_params *params,
                              mnv_session **out);
void mnv_session_free(mnv_session *s);

/* Forget all context (positions restart at 0). */
void mnv_session_reset(mnv_session *s);
/* Tokens currently held in the session's context. */
int32_t mnv_session_n_past(const mnv_session *s);

/* Evaluate n tokens appended to the session's context (prompt processing).
 * If logits is not NULL it receives n * n_vocab floats, one row per token
 * (row-major); else only the last token's logits are kept internally for
 * sampling. Fails with MNV_ERR_RANGE when the context would overflow, and
 * with MNV_ERR_RANGE naming the id when an id is outside the vocabulary. */
mnv_status mnv_session_eval(mnv_session *s, const int32_t *ids, size_t n, float *logits);

/* Figures of the session's most recent forward pass (host-side cost and
 * memory), for benchmarks. */
typedef struct {
    int32_t n_nodes;         /* nodes in the last graph */
    double build_seconds;    /* recording the graph */
    double plan_seconds;     /* memory planning */
    double compute_seconds;  /* running it on the backend (includes dispatch) */
    uint64_t arena_bytes;    /* activation memory held */
    uint64_t kv_bytes;       /* KV cache memory held */
    int32_t n_ctx;           /* context length in tokens */
    int32_t n_threads;       /* compute threads */
} mnv_session_stats;

mnv_status mnv_session_get_stats(const mnv_session *s, mnv_session_stats *out);

/* Write the last evaluation's compute graph in Graphviz DOT to path. */
mnv_status mnv_session_dump_graph(mnv_session *s, const char *path);

/* ------------------------------------------------------------------------ */
/* Generation                                                               */
/* ------------------------------------------------------------------------ */

typedef struct {
    uint32_t size;            /* sizeof(mnv_sampler_params) */
    float temperature;        /* <= 0: greedy (default 0.8) */
    int32_t top_k;            /* <= 0: off (default 40) */
    float top_p;              /* >= 1: off (default 0.95) */
    float min_p;              /* <= 0: off (default 0.05) */
    float repeat_penalty;     /* 1: off (default 1) */
    int32_t repeat_last_n;    /* window for penalties (default 64; -1 = whole context) */
    float frequency_penalty;  /* 0: off */
    float presence_penalty;   /* 0: off */
    uint64_t seed;            /* same seed + same inputs = same output */
    uint32_t reserved[8];
} mnv_sampler_params;

mnv_sampler_params mnv_sampler_params_default(void);

typedef enum {
    MNV_STOP_NONE = 0,
    MNV_STOP_MAX_TOKENS,
    MNV_STOP_EOS,
    MNV_STOP_STRING,
    MNV_STOP_CALLBACK,
    MNV_STOP_CONTEXT_FULL
} mnv_stop_reason;

/* Called once per generated token with its id and the complete UTF-8 text it
 * adds (possibly empty while a multi-byte character is incomplete; text held
 * back because it may begin a stop string is delivered once it cannot).
 * Return non-zero to stop generation. */
typedef int (*mnv_token_callback)(void *user_data, int32_t token, const char *text, size_t len);

typedef struct {
    uint32_t size;                 /* sizeof(mnv_generate_params) */
    int32_t max_tokens;            /* default 256 */
    mnv_sampler_params sampler;
    const char *const *stop_strings; /* n_stop strings; generation stops before them */
    size_t n_stop;
    const int32_t *eos_ids;        /* extra ids that end generation */
    size_t n_eos;
    int ignore_eos;                /* 1: don't stop at the model's EOS ids */
    mnv_token_callback on_token;   /* may be NULL */
    void *user_data;
    uint32_t reserved[8];
} mnv_generate_params;

mnv_generate_params mnv_generate_params_default(void);

typedef struct {
    mnv_stop_reason stop_reason;
    int32_t n_prompt;        /* prompt tokens evaluated */
    int32_t n_generated;     /* tokens generated (including a final EOS) */
    double prompt_seconds;   /* wall time of prompt evaluation */
    double gen_seconds;      /* wall time of generation after the prompt */
} mnv_generate_result;

/* Append the prompt to the session's context, then sample up to max_tokens
 * tokens, calling on_token for each. result may be NULL. */
mnv_status mnv_generate(mnv_session *s, const int32_t *prompt, size_t n_prompt,
                        const mnv_generate_params *params, mnv_generate_result *result);

/* ------------------------------------------------------------------------ */
/* Random-weight checkpoints (benchmarks at real sizes)                     */
/* ------------------------------------------------------------------------ */

typedef struct {
    uint32_t size;            /* sizeof(mnv_synth_params) */
    const char *config_path;  /* a config.json of a supported architecture */
    const char *out_dir;      /* created if missing */
    mnv_dtype dtype;          /* F32, F16 or BF16 (default BF16) */
    uint64_t seed;
    uint32_t reserved[8];
} mnv_synth_params;

mnv_synth_params mnv_synth_params_default(void);

/* Write config.json and model.safetensors with random weights (normal,
 * std 0.02, norms at 1) for the configuration. */
mnv_status mnv_synthesize(const mnv_synth_params *params);

/* ------------------------------------------------------------------------ */
/* Conversion to the MLX format                                             */
/* ------------------------------------------------------------------------ */

/* Progress of a long operation: done and total in bytes of tensor data. */
typedef void (*mnv_progress_callback)(void *user_data, uint64_t done, uint64_t total);

typedef struct {
    uint32_t size;              /* sizeof(mnv_convert_params) */
    const char *src_dir;        /* Hugging Face (or MLX) model directory */
    const char *dst_dir;        /* created if missing */
    const char *q_mode;         /* NULL: no quantization; "affine", "mxfp4", "mxfp8", "nvfp4" */
    int32_t q_bits;             /* 0: the mode's default */
    int32_t q_group_size;       /* 0: the mode's default */
    mnv_dtype dtype;            /* float dtype of unquantized tensors and affine scales;
                                   MNV_DTYPE_COUNT (default): the source's torch_dtype */
    int dequantize;             /* 1: turn a quantized model back into plain weights */
    uint64_t max_shard_bytes;   /* 0: 5 GiB, as mlx-lm */
    mnv_progress_callback progress; /* may be NULL */
    void *user_data;
    uint32_t reserved[8];
} mnv_convert_params;

mnv_convert_params mnv_convert_params_default(void);

/* Convert a model directory to an MLX-format directory that mlx-lm loads
 * unchanged: the same tensor names, packing and dtypes, a `quantization`
 * block in config.json, shards of at most max_shard_bytes with
 * model.safetensors.index.json, and the tokenizer and generation files
 * copied. */
mnv_status mnv_convert(const mnv_convert_params *params);

#ifdef __cplusplus
}
#endif
#endif /* MINERVA_H */
