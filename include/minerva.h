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
 *  - An mnv_model is immutable after loading: several sessions and engines
 *    on several threads may share one model, each giving what it gives
 *    alone. Each session has its own compute threads and KV cache; an
 *    mnv_engine serves many requests with one thread pool and one KV pool.
 *  - An mnv_session, and an mnv_tokenizer's streaming decoder, must be used
 *    by one thread at a time, with one exception: mnv_session_cancel may be
 *    called from any thread.
 *  - mnv_engine_submit, _cancel, _wait and _get_stats may be called from any
 *    thread; see the engine section for its callbacks.
 *  - The log callback (mnv_set_log_callback) is process-wide.
 *  - An mnv_tokenizer is immutable after loading and may be shared.
 */
#ifndef MINERVA_H
#define MINERVA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library's version; the build reads it from here (one source). The
 * shared library's SONAME follows it: libminerva.so.0.MINOR while MAJOR is 0
 * (any minor release may change the ABI), libminerva.so.MAJOR afterwards. */
#define MNV_VERSION_MAJOR 0
#define MNV_VERSION_MINOR 1
#define MNV_VERSION_PATCH 0

/* MNV_API marks the public functions: the only symbols libminerva.so
 * exports (the library is built with hidden visibility by default). A user
 * may define it before including this header. */
#ifndef MNV_API
#if defined(__GNUC__) || defined(__clang__)
#define MNV_API __attribute__((visibility("default")))
#else
#define MNV_API
#endif
#endif

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
    X(MNV_ERR_INTERNAL, "internal error")                                    \
    X(MNV_ERR_BUFFER_TOO_SMALL, "buffer too small")

typedef enum {
#define MNV_X_ENUM(name, str) name,
    MNV_STATUS_LIST(MNV_X_ENUM)
#undef MNV_X_ENUM
    MNV_STATUS_COUNT
} mnv_status;

/* MNV_ERR_RANGE is a value outside its valid range (a token id outside the
 * vocabulary, a position beyond the context). MNV_ERR_BUFFER_TOO_SMALL is a
 * caller's buffer too small for a result: the call reports the size needed
 * (e.g. in *n_out or *len_out), so a caller grows its buffer to that size and
 * calls again. Statuses are only ever appended to the list (stable values). */

/* A static, human-readable name for a status. Never NULL. */
MNV_API const char *mnv_status_str(mnv_status s);

/* The detailed message of the calling thread's most recent failure
 * (e.g. "model.safetensors: tensor 'model.norm.weight': data_offsets end
 * 4096 beyond buffer size 4000"). Never NULL; "" if there was none. */
MNV_API const char *mnv_last_error(void);

/* Copy the calling thread's last error message into buf (cap bytes, always
 * NUL-terminated when cap > 0, truncated to fit) and return its full length,
 * as snprintf does: a result >= cap means it was cut. The copy belongs to
 * the caller, so it may be handed to another thread (mnv_last_error's
 * pointer is only meaningful on the thread that failed). buf may be NULL
 * when cap is 0. */
MNV_API size_t mnv_last_error_copy(char *buf, size_t cap);

/* Diagnostics the library writes (a setting it ignores, say). Errors of
 * calls are never logged: they are returned (status + mnv_last_error). */
typedef enum {
    MNV_LOG_ERROR = 0,
    MNV_LOG_WARN,
    MNV_LOG_INFO,
    MNV_LOG_DEBUG
} mnv_log_level;

/* Receives one message (a line without its newline, NUL-terminated, valid
 * during the call only). It may be called from any thread of the library,
 * one call at a time; it must not call mnv_set_log_callback. */
typedef void (*mnv_log_callback)(void *user_data, mnv_log_level level, const char *msg);

/* Route the library's diagnostics to cb (process-wide). By default, and
 * after mnv_set_log_callback(NULL, NULL), they go to stderr prefixed
 * "minerva: ". To silence them, pass a callback that does nothing.
 * Thread-safe; a message in flight finishes with the callback it began with. */
MNV_API void mnv_set_log_callback(mnv_log_callback cb, void *user_data);

/* Library version as "MAJOR.MINOR.PATCH". */
MNV_API const char *mnv_version(void);

/* The CPU path this process runs. The instruction-set level is the best the
 * CPU has unless the environment variable MINERVA_CPU (scalar, avx2, avx512,
 * neon, neon-dot; read once) caps it; every kernel then runs the fastest
 * implementation of that level or below. Strings are static. */
typedef struct {
    const char *level;         /* level in use: "scalar", "avx2", "avx512", "neon", "neon-dot" */
    const char *host_level;    /* the best level the CPU has */
    const char *matmul;        /* float-weight (f32, f16, bf16) matrix products */
    const char *qmatmul;       /* quantized matrix products (default numerics) */
    const char *qmatmul_exact; /* quantized matrix products of a session with exact_quant */
    const char *attention;     /* attention over f32 caches */
    const char *vec;           /* vector primitives (norms, activations) */
    int32_t n_cpus;            /* CPUs this process may run on (affinity mask, cgroup CPU
                                  quota): the default thread count and the most used */
    uint32_t reserved[8];
} mnv_cpu_info;

/* Fills *info (never fails on a valid pointer; MNV_ERR_INVALID_ARG on NULL).
 * Thread-safe. */
MNV_API mnv_status mnv_cpu_get_info(mnv_cpu_info *info);

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
MNV_API const char *mnv_dtype_name(mnv_dtype t);

/* KV cache element types. Q8 and Q4 are affine per group of elements along
 * the head dimension (32, or the largest of 16 and 8 that divides head_dim,
 * else head_dim itself): value = scale * q + bias, q an unsigned 8- or 4-bit
 * integer, one f16 scale and one f16 bias per group. MNV_KV_DEFAULT in
 * params means: the type kv_dtype names. */
typedef enum {
    MNV_KV_DEFAULT = 0,
    MNV_KV_F32,
    MNV_KV_F16,
    MNV_KV_BF16,
    MNV_KV_Q8,
    MNV_KV_Q4,
    MNV_KV_TYPE_COUNT
} mnv_kv_type;

/* "f32", "f16", "bf16", "q8", "q4" ("default" for MNV_KV_DEFAULT, "?" otherwise). */
MNV_API const char *mnv_kv_type_name(mnv_kv_type t);

/* Rotation of the KV cache (params' kv_rotate): a normalized Walsh-Hadamard
 * transform along the head dimension, in blocks of the largest power of two
 * that divides head_dim, applied to queries and keys after RoPE (attention
 * scores are unchanged) and to values before they are cached, the attention
 * output turned back. Results are the same up to rounding; a quantized side
 * loses less, since the rotation spreads a few large channels over the
 * whole group. AUTO: the Q4 sides only (where it was measured to pay); ON:
 * both sides, whatever their types; OFF: never. The setting belongs to the
 * session or engine: its cache (prefix cache included) holds rotated rows. */
typedef enum {
    MNV_KV_ROTATE_AUTO = 0,
    MNV_KV_ROTATE_ON,
    MNV_KV_ROTATE_OFF,
    MNV_KV_ROTATE_COUNT
} mnv_kv_rotate;

/* "auto", "on", "off" ("?" otherwise). */
MNV_API const char *mnv_kv_rotate_name(mnv_kv_rotate r);

/* ------------------------------------------------------------------------ */
/* Tokenizer                                                                */
/* ------------------------------------------------------------------------ */

typedef struct mnv_tokenizer mnv_tokenizer;

/* Load a Hugging Face tokenizer.json (BPE: byte-level or SentencePiece-style).
 * If a tokenizer_config.json sits beside it, it is read for the BOS/EOS
 * tokens and add_bos_token. On success *out owns the tokenizer; free it with
 * mnv_tokenizer_free.
 * Fails with MNV_ERR_FORMAT when either file is not valid UTF-8 (as Hugging
 * Face refuses it; the message names the JSON path of the string and the
 * byte offset), when a post-processor's BOS id is no token of the
 * vocabulary, or on malformed content; MNV_ERR_UNSUPPORTED names a component
 * it does not implement (or a Sequence nested more than 8 deep). */
MNV_API mnv_status mnv_tokenizer_load(const char *tokenizer_json_path, mnv_tokenizer **out);
MNV_API void mnv_tokenizer_free(mnv_tokenizer *tok);

/* Vocabulary size including added tokens (max id + 1). */
MNV_API int32_t mnv_tokenizer_n_vocab(const mnv_tokenizer *tok);
/* BOS / EOS ids, or -1 when the tokenizer defines none. */
MNV_API int32_t mnv_tokenizer_bos(const mnv_tokenizer *tok);
MNV_API int32_t mnv_tokenizer_eos(const mnv_tokenizer *tok);
/* 1 when tokenizer_config.json asks for a BOS token before a prompt. */
MNV_API int mnv_tokenizer_add_bos(const mnv_tokenizer *tok);

/* Encode UTF-8 text (len bytes; text need not be NUL-terminated).
 * Equals Hugging Face `Tokenizer.encode(text, add_special_tokens=False)`:
 * added/special tokens written in the text are recognised. With add_bos != 0
 * and a BOS token defined, BOS is prepended.
 * Text that is not valid UTF-8 is not an error: each maximal invalid
 * sequence is read as U+FFFD (Python's bytes.decode(errors="replace"), the
 * string a Hugging Face caller would pass), so such text encodes like the
 * text with those replacement characters.
 * Writes at most cap ids; *n_out receives the number of ids the full encoding
 * has. If that exceeds cap, returns MNV_ERR_BUFFER_TOO_SMALL (call again with
 * cap = *n_out). ids may be NULL when cap is 0. */
MNV_API mnv_status mnv_tokenize(const mnv_tokenizer *tok, const char *text, size_t len, int add_bos,
                        int32_t *ids, size_t cap, size_t *n_out);

/* Decode ids to UTF-8 text, as Hugging Face `decode(ids,
 * skip_special_tokens=skip_special)` does. Writes at most cap bytes plus a
 * terminating NUL when room allows; *len_out receives the full length
 * (excluding NUL). Returns MNV_ERR_BUFFER_TOO_SMALL if cap <= full length
 * (call again with cap = *len_out + 1). An id outside the vocabulary, or with
 * no token in it, gives MNV_ERR_RANGE naming the id (and *len_out = 0). */
MNV_API mnv_status mnv_detokenize(const mnv_tokenizer *tok, const int32_t *ids, size_t n, int skip_special,
                          char *text, size_t cap, size_t *len_out);

/* Streaming decoder: feed one id at a time, receive only complete UTF-8
 * characters (never half a character). Owned by the caller. */
typedef struct mnv_detok_stream mnv_detok_stream;
MNV_API mnv_status mnv_detok_stream_create(const mnv_tokenizer *tok, mnv_detok_stream **out);
/* Appends the text that id completes to out (at most cap bytes) and sets
 * *len_out. 64 bytes are always enough for one token's text unless the
 * vocabulary holds longer pieces; MNV_ERR_BUFFER_TOO_SMALL then sets *len_out
 * to the size needed and leaves the stream as it was, so the same id can be
 * pushed again with a larger buffer. An id with no token gives MNV_ERR_RANGE
 * (the stream is unchanged). */
MNV_API mnv_status mnv_detok_stream_push(mnv_detok_stream *s, int32_t id, char *out, size_t cap,
                                 size_t *len_out);
/* Flushes any held incomplete bytes (as U+FFFD replacement characters);
 * MNV_ERR_BUFFER_TOO_SMALL as for push. */
MNV_API mnv_status mnv_detok_stream_flush(mnv_detok_stream *s, char *out, size_t cap, size_t *len_out);
MNV_API void mnv_detok_stream_free(mnv_detok_stream *s);

/* ------------------------------------------------------------------------ */
/* Model                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct mnv_model mnv_model;

/* Progress of a long operation: done and total in bytes of tensor data.
 * Called on the thread doing the work; done grows to total. */
typedef void (*mnv_progress_callback)(void *user_data, uint64_t done, uint64_t total);

typedef struct {
    uint32_t size;     /* sizeof(mnv_model_params) */
    int n_threads;     /* CPU threads for compute; 0 = the CPUs this process may run on
                          (mnv_cpu_info.n_cpus); more than that is clamped to it */
    int use_mmap;      /* reserved: weights are always mapped, not copied (1) */
    int load_tokenizer; /* 1 (default): tokenizer.json is loaded if present */
    mnv_progress_callback progress; /* NULL (default): the weights are mapped and read
                                       from disk when first used. Set: the load also
                                       reads every page of the weights (so the first
                                       generation does not wait on the disk) and reports
                                       (bytes read, total weight bytes): at 0, about every
                                       32 MiB and at the total, on the loading thread
                                       (a device's copy: mnv_session_load_weights) */
    void *progress_user_data;
    uint32_t reserved[8];
} mnv_model_params;

MNV_API mnv_model_params mnv_model_params_default(void);

/* Load a model directory in Hugging Face / mlx-community layout:
 * config.json, model.safetensors or model.safetensors.index.json with shards,
 * optional generation_config.json, tokenizer.json, tokenizer_config.json.
 * On success *out owns the model; free with mnv_model_free. */
MNV_API mnv_status mnv_model_load(const char *dir, const mnv_model_params *params, mnv_model **out);
MNV_API void mnv_model_free(mnv_model *model);

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
    uint64_t active_bytes_per_token; /* weight bytes one decoded token reads: every tensor,
                                        but one embedding row and only the experts a token
                                        selects (k of E); the floor of decode traffic */
    const char *chat_format; /* "harmony" (gpt-oss: see the Chat section and
                                mnv_chat_tokens for its special tokens) or "none"
                                (a base model: plain text prompts). Static storage. */
} mnv_model_info;

/* Fills *info. Strings are borrowed: valid until the model is freed. */
MNV_API mnv_status mnv_model_get_info(const mnv_model *model, mnv_model_info *info);

/* Estimate a model from its config.json alone, without weights: parameter
 * count, bytes of weights in the layout the config's "quantization" block
 * describes (float tensors counted at the config's torch_dtype), KV bytes
 * per token. Fills the same fields mnv_model_get_info does (arch points to
 * static storage until the next call on this thread). MNV_ERR_RANGE, the
 * magnitudes in the message, when a count does not fit in 64 bits. */
MNV_API mnv_status mnv_config_estimate(const char *config_path, mnv_model_info *info);

/* The model's tokenizer, or NULL if the directory had none. Borrowed: valid
 * until the model is freed. */
MNV_API const mnv_tokenizer *mnv_model_tokenizer(const mnv_model *model);

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
MNV_API size_t mnv_model_n_tensors(const mnv_model *model);
MNV_API mnv_status mnv_model_tensor_info(const mnv_model *model, size_t i, mnv_tensor_info *info);

/* ------------------------------------------------------------------------ */
/* Session: a KV cache and compute state for generation                     */
/* ------------------------------------------------------------------------ */

typedef struct mnv_session mnv_session;

typedef struct {
    uint32_t size;      /* sizeof(mnv_session_params) */
    int32_t n_ctx;      /* context length in tokens; 0 = min(model's, 4096) */
    int32_t n_batch;    /* max tokens evaluated in one forward pass; 0 = 512 */
    int32_t n_threads;  /* 0 = the model's setting; clamped to mnv_cpu_info.n_cpus */
    mnv_dtype kv_dtype; /* KV cache element type: F32 (default, exact), BF16 or F16 (half the memory) */
    int32_t exact_quant; /* 1: quantized matrix products keep f32 activations (MLX's numerics,
                            slower); 0 (default): activations rounded to int8 per row where the
                            CPU has fast int8 dot products, as llama.cpp does */
    int32_t deterministic; /* 1: every token's results are computed as if it were alone in its
                              batch (matrix products as passes of the decode kernels), so
                              a prompt gives the same tokens whether it is evaluated in one batch,
                              in chunks, or batched with other requests on an engine with the
                              same setting; prefill is slower. 0 (default): products pick the
                              fastest kernel for the batch, and results may differ in the last
                              bits with the batch's composition */
    int32_t kv_type_k;   /* mnv_kv_type of the K cache; MNV_KV_DEFAULT (0): as kv_dtype */
    int32_t kv_type_v;   /* mnv_kv_type of the V cache; MNV_KV_DEFAULT (0): as kv_dtype */
    const char *device;    /* where to compute: "cpu", "cuda" (device 0) or "cuda:N"; NULL = the
                              default (the CPU). A device not built in or not present fails
                              mnv_session_create with MNV_ERR_UNSUPPORTED naming it. The string
                              is read during the call only */
    int32_t kv_rotate;     /* mnv_kv_rotate: a rotation of the K/V heads; AUTO (0) by default */
    uint32_t reserved[5];
} mnv_session_params;

MNV_API mnv_session_params mnv_session_params_default(void);

/* What a model directory will need in memory, from its config.json alone
 * (nothing is mapped), for one session of the given parameters. */
typedef struct {
    uint64_t weight_bytes;  /* weights, as mnv_config_estimate counts them (mapped from
                               the files: page cache, shared by every session) */
    uint64_t kv_bytes;      /* the KV cache of one session: n_ctx tokens of K and V at their types */
    uint64_t compute_bytes; /* an upper bound of one session's activation memory for a
                               full n_batch pass at the full context, and its logits */
    uint64_t total_bytes;   /* the sum */
    int32_t n_ctx;          /* the context length the figures assume */
    int32_t n_batch;        /* the batch length the figures assume */
} mnv_memory_estimate;

/* Estimate the memory that loading the model in dir and running one session
 * with session_params (NULL: the defaults; n_ctx 0 is resolved as
 * mnv_session_create does) will need, before loading it. Fails as
 * mnv_config_estimate does on a missing or malformed config.json. Every
 * further session adds kv_bytes + compute_bytes. */
MNV_API mnv_status mnv_model_estimate_memory(const char *dir, const mnv_session_params *session_params,
                                             mnv_memory_estimate *out);

/* Create a session on a model. The model must outlive the session. */
MNV_API mnv_status mnv_session_create(mnv_model *model, const mnv_session_params *params,
                              mnv_session **out);
MNV_API void mnv_session_free(mnv_session *s);

/* Forget all context (positions restart at 0) and drop a pending
 * cancellation request. */
MNV_API void mnv_session_reset(mnv_session *s);

/* Ask the session's running evaluation or generation to stop. Callable from
 * any thread, at any time while the session exists (not after
 * mnv_session_free: a host that cancels from another thread must order the
 * two itself). mnv_session_eval and mnv_generate return MNV_ERR_CANCELLED at
 * their next check: before each batch of at most n_batch prompt tokens,
 * before each generated token, and inside a forward pass between two
 * operations of its graph, so a long prompt's batch stops within one
 * operation's time (such as one matrix product), not the whole batch's.
 * The message says where it stopped. A request made while nothing runs is
 * kept: the next eval or generate returns MNV_ERR_CANCELLED at once. Each
 * request cancels one call; it is consumed when that call returns
 * MNV_ERR_CANCELLED (a request that arrives after the last operation of the
 * last forward pass is kept for the next call).
 * After a cancelled call the context holds the tokens of the batches
 * completed before the stop (mnv_session_n_past tells how many; a batch
 * stopped midway counts for nothing), the last logits are those of the last
 * completed batch, and the session stays usable: continue, truncate or
 * reset it. */
MNV_API void mnv_session_cancel(mnv_session *s);
/* Keep only the first n tokens of the context (n <= mnv_session_n_past):
 * later evaluation continues from position n, so a conversation whose new
 * rendering shares a prefix with the old one re-evaluates only the rest. */
MNV_API mnv_status mnv_session_truncate(mnv_session *s, int32_t n);
/* On a device with memory of its own (cuda), copy the model's weights there
 * now rather than at the first evaluation, reporting (bytes copied, total)
 * to progress (may be NULL) at 0, about every 256 MiB and at the total, on
 * this thread, during this call only. On the CPU it does nothing and
 * reports nothing (the weights are read where they are mapped). */
MNV_API mnv_status mnv_session_load_weights(mnv_session *s, mnv_progress_callback progress, void *user_data);

/* Tokens currently held in the session's context. */
MNV_API int32_t mnv_session_n_past(const mnv_session *s);

/* Evaluate n tokens appended to the session's context (prompt processing).
 * If logits is not NULL it receives n * n_vocab floats, one row per token
 * (row-major); else only the last token's logits are kept internally for
 * sampling. Fails with MNV_ERR_RANGE when the context would overflow, and
 * with MNV_ERR_RANGE naming the id when an id is outside the vocabulary. */
MNV_API mnv_status mnv_session_eval(mnv_session *s, const int32_t *ids, size_t n, float *logits);

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
    int32_t n_threads_requested; /* the count asked for (0: automatic); a count above the
                                    CPUs this process may use is clamped to them (n_threads) */
} mnv_session_stats;

MNV_API mnv_status mnv_session_get_stats(const mnv_session *s, mnv_session_stats *out);

/* Write the last evaluation's compute graph in Graphviz DOT to path. */
MNV_API mnv_status mnv_session_dump_graph(mnv_session *s, const char *path);

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

MNV_API mnv_sampler_params mnv_sampler_params_default(void);

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
 * text is never NULL (len bytes, not NUL-terminated; a model without a
 * tokenizer gives len 0). Return non-zero to stop generation. */
typedef int (*mnv_token_callback)(void *user_data, int32_t token, const char *text, size_t len);

/* A bias added to one token's logit before sampling (OpenAI's logit_bias:
 * -100 all but bans a token, +100 all but forces it). */
typedef struct {
    int32_t token;
    float bias;
} mnv_logit_bias;

/* The log-probabilities of one sampled token, in the model's distribution
 * (log-softmax of its logits with the logit biases added, before penalties,
 * top-k/p, min-p and temperature), and the n_top most likely tokens of that
 * distribution in descending order (ties to the lower id). The arrays are
 * borrowed, valid during the callback only. */
typedef struct {
    int32_t token;
    float logprob;
    int32_t n_top;
    const int32_t *top_ids;
    const float *top_logprobs;
} mnv_token_logprobs;

/* The most alternatives mnv_token_logprobs carries. */
#define MNV_MAX_TOP_LOGPROBS 20
/* Called once per sampled token, just before on_token for the same token. */
typedef void (*mnv_logprobs_callback)(void *user_data, const mnv_token_logprobs *lp);

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
    const mnv_logit_bias *logit_bias; /* n_logit_bias biases (ids in the vocabulary, finite
                                         biases; a token given twice adds both) */
    size_t n_logit_bias;
    mnv_logprobs_callback on_logprobs; /* may be NULL (default); gets user_data */
    int32_t n_top_logprobs;        /* 0..20: top alternatives given to on_logprobs */
    const int32_t *scripted_ids;   /* n_scripted ids that the first generated tokens are,
                                      instead of sampled ones (logits are still computed
                                      and logprobs reported): a scripted reply, for testing
                                      what reads a model's output. Default NULL */
    size_t n_scripted;
    uint32_t reserved[8];
} mnv_generate_params;

MNV_API mnv_generate_params mnv_generate_params_default(void);

typedef struct {
    mnv_stop_reason stop_reason;
    int32_t n_prompt;        /* prompt tokens evaluated */
    int32_t n_generated;     /* tokens generated (including a final EOS) */
    double prompt_seconds;   /* wall time of prompt evaluation */
    double gen_seconds;      /* wall time of generation after the prompt */
} mnv_generate_result;

/* Append the prompt to the session's context, then sample up to max_tokens
 * tokens, calling on_token for each. MNV_ERR_CANCELLED after
 * mnv_session_cancel (result still tells the tokens generated so far). result may be NULL. Parameters are
 * checked before the prompt enters the context. With n_prompt 0, generation
 * continues from the logits of the last evaluated token (MNV_ERR_INVALID_ARG
 * after a reset or a truncation). On return the context holds the prompt and
 * every generated token but the last one (which was sampled, not evaluated):
 * to continue a conversation, pass that token first in the next prompt. */
MNV_API mnv_status mnv_generate(mnv_session *s, const int32_t *prompt, size_t n_prompt,
                        const mnv_generate_params *params, mnv_generate_result *result);

/* ------------------------------------------------------------------------ */
/* Engine: many sequences on one model                                      */
/* ------------------------------------------------------------------------ */

/* An engine serves many generation requests on one model at once: one
 * backend with its one thread pool, a paged KV block pool shared by every
 * sequence (with prefix sharing: a prompt that starts with the tokens of a
 * cached one reuses their K/V), a cache of planned step graphs, and a
 * scheduler that runs one ragged batch per step: one token for every
 * decoding request plus chunks of waiting prompts up to the step's token
 * budget (continuous batching with chunked prefill). Requests are named by
 * 64-bit ids (never 0), so a cancel from another thread never touches freed
 * memory. */
typedef struct mnv_engine mnv_engine;

typedef struct {
    uint32_t size;            /* sizeof(mnv_engine_params) */
    int32_t n_threads;        /* 0 = the model's setting; clamped to the CPUs */
    mnv_dtype kv_dtype;       /* KV element type: F32 (default, exact), F16 or BF16 */
    uint64_t kv_budget_bytes; /* memory of the KV block pool; 0: sized from kv_max_tokens */
    int32_t kv_max_tokens;    /* with kv_budget_bytes 0: tokens of context all sequences hold
                                 together; 0: max_seqs sequences of max_seq_tokens (in whole
                                 blocks), at most 65536 */
    int32_t kv_block_tokens;  /* tokens per KV block; 0 = 16 */
    int32_t max_seqs;         /* requests running at once; 0 = 8 (more wait in a queue) */
    int32_t max_seq_tokens;   /* context of one request; 0 = min(model's, 4096) */
    int32_t step_tokens;      /* tokens of one step (decodes + prefill chunks); 0 = 512 */
    int32_t prefix_cache;     /* 1 (default): reuse the K/V of cached prompt prefixes */
    int32_t exact_quant;      /* as in mnv_session_params */
    int32_t run_thread;       /* 1 (default): the engine runs steps on a thread of its own;
                                 0: the caller drives it with mnv_engine_step */
    int32_t deterministic;    /* as in mnv_session_params: a request's tokens do not depend on
                                 what it is batched with */
    int32_t kv_type_k;        /* as in mnv_session_params: K and V element types (mnv_kv_type, */
    int32_t kv_type_v;        /* q8/q4 included); MNV_KV_DEFAULT (0): as kv_dtype */
    const char *device;       /* as in mnv_session_params */
    int32_t kv_rotate;        /* as in mnv_session_params (mnv_kv_rotate) */
    int32_t host_sampling;    /* 0 (default): on a device (cuda), a sampled request whose
                                 sampler cuts the vocabulary (top-k up to 256, top-p, min-p;
                                 penalties only before a top-k; no logit bias or
                                 log-probabilities) gets its row's 256 best candidates from
                                 where the logits are, not the row: the same tokens; on the
                                 CPU, where the rows are in host memory already, it samples
                                 the row. 1: rows everywhere. -1: candidates on the CPU too */
    uint32_t reserved[4];
} mnv_engine_params;

MNV_API mnv_engine_params mnv_engine_params_default(void);

/* Create an engine on a model (which must outlive it). The KV pool is sized
 * up front; MNV_ERR_NOMEM names the figures when it does not fit in the
 * memory available. */
MNV_API mnv_status mnv_engine_create(mnv_model *model, const mnv_engine_params *params, mnv_engine **out);
/* As mnv_session_load_weights, for an engine: call it before the first
 * request is submitted. */
MNV_API mnv_status mnv_engine_load_weights(mnv_engine *e, mnv_progress_callback progress, void *user_data);
/* Cancel every request (their on_done sees MNV_ERR_CANCELLED), stop the
 * step thread, free everything. Not from a callback, and not while another
 * thread is in mnv_engine_wait (collect or detach requests first). */
MNV_API void mnv_engine_free(mnv_engine *e);

typedef struct {
    mnv_generate_result gen;  /* stop reason, token counts; prompt_seconds: admission to the
                                 first token, gen_seconds: the first token to the end */
    int32_t n_cached;         /* prompt tokens whose K/V came from the prefix cache */
    double queue_seconds;     /* submission to admission (waiting for room) */
    double first_token_seconds; /* submission to the first generated token */
    uint32_t reserved[8];
} mnv_request_result;

/* Called on the step thread when a request ends: finished (status MNV_OK),
 * cancelled (MNV_ERR_CANCELLED) or failed (its error). */
typedef void (*mnv_request_done_callback)(void *user_data, uint64_t id, mnv_status status,
                                          const mnv_request_result *result);

typedef struct {
    uint32_t size;            /* sizeof(mnv_request_params) */
    const int32_t *prompt;    /* n_prompt >= 1 token ids, copied at submission */
    size_t n_prompt;
    mnv_generate_params gen;  /* max_tokens, sampler, stop strings, EOS ids, on_token and
                                 user_data, as for mnv_generate (strings and ids are copied) */
    mnv_request_done_callback on_done; /* may be NULL; gets gen.user_data */
    int32_t detached;         /* 1: nothing is kept once the request ends (mnv_engine_wait
                                 does not know it); 0 (default): its result is kept until
                                 mnv_engine_wait collects it */
    uint32_t reserved[8];
} mnv_request_params;

MNV_API mnv_request_params mnv_request_params_default(void);

/* Callbacks (gen.on_token, on_done) run on the thread that runs steps: the
 * engine's own, or the caller of mnv_engine_step. They may call submit,
 * cancel and get_stats, not step, wait or free; a slow callback delays
 * every stream of the step. An error of one request (its sampler, its
 * callback) ends that request alone.
 *
 * Any thread (callbacks included). Queue a request; it joins the running
 * batch at the next step with room for it. Fails at once with MNV_ERR_RANGE
 * when the prompt alone does not fit in max_seq_tokens (or in the whole
 * pool), and with MNV_ERR_INVALID_ARG or MNV_ERR_RANGE on bad parameters
 * (an id outside the vocabulary); a busy or full pool makes it wait, never
 * fail. *id_out: the request's id. */
MNV_API mnv_status mnv_engine_submit(mnv_engine *e, const mnv_request_params *params, uint64_t *id_out);
/* Any thread. The request ends at the next step (its KV blocks go back to
 * the pool there, mid-prefill or mid-decode) with MNV_ERR_CANCELLED.
 * MNV_ERR_INVALID_ARG for an id that is unknown or has ended. */
MNV_API mnv_status mnv_engine_cancel(mnv_engine *e, uint64_t id);
/* Any thread but the step thread: block until request id has ended, then
 * return its status and fill *result (may be NULL); the record is then
 * freed. MNV_ERR_INVALID_ARG for an unknown, detached or already collected
 * id. With run_thread 0 another thread must be stepping meanwhile. */
MNV_API mnv_status mnv_engine_wait(mnv_engine *e, uint64_t id, mnv_request_result *result);
/* With run_thread 0 only, from one thread: run one step (nothing when idle).
 * *n_active_out (may be NULL): requests running or waiting afterwards. */
MNV_API mnv_status mnv_engine_step(mnv_engine *e, int32_t *n_active_out);

typedef struct {
    int32_t n_running;          /* requests holding a sequence */
    int32_t n_waiting;          /* queued for room */
    uint64_t steps;
    uint64_t tokens_decoded;    /* generated tokens evaluated */
    uint64_t tokens_prefilled;  /* prompt tokens evaluated */
    uint64_t prefix_hit_tokens; /* prompt tokens served by the prefix cache */
    uint64_t kv_bytes_total, kv_bytes_used, kv_bytes_cached, kv_bytes_free, kv_bytes_peak;
    int64_t kv_blocks_total, kv_blocks_used, kv_blocks_cached, kv_blocks_free;
    int32_t kv_block_tokens;
    uint64_t graph_cache_hits, graph_cache_misses;
    uint64_t preemptions;       /* requests sent back to the queue for room (recomputed later) */
    double host_seconds;        /* building, planning and filling step inputs, summed */
    double compute_seconds;     /* running the steps' graphs, summed */
    uint64_t sampled_from_cands; /* sampled tokens decided by their row's candidates */
    uint64_t sampled_from_rows;  /* sampled tokens drawn from a whole row of logits brought back */
    uint32_t reserved[4];
} mnv_engine_stats;

/* Any thread: a consistent snapshot. */
MNV_API void mnv_engine_get_stats(mnv_engine *e, mnv_engine_stats *out);

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

MNV_API mnv_synth_params mnv_synth_params_default(void);

/* Write config.json and model.safetensors with random weights (normal,
 * std 0.02, norms at 1) for the configuration. Nothing is written, and
 * MNV_ERR_RANGE or MNV_ERR_IO says why, when the weights would exceed 16 TiB
 * or the free space of the output's file system; a failure while writing
 * removes what was written (and out_dir, if this call created it). */
MNV_API mnv_status mnv_synthesize(const mnv_synth_params *params);

/* ------------------------------------------------------------------------ */
/* Conversion to the MLX format                                             */
/* ------------------------------------------------------------------------ */

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
    const char *q_experts_mode; /* NULL: as q_mode; else the mode (with its default bits and
                                   group size) of mixture-of-experts stacks, e.g. "mxfp4"
                                   with q_mode "affine", 8 bits: the MXFP4-Q8 layout */
    uint32_t reserved[8];
} mnv_convert_params;

MNV_API mnv_convert_params mnv_convert_params_default(void);

/* Convert a model directory to an MLX-format directory that mlx-lm loads
 * unchanged: the same tensor names, packing and dtypes, a `quantization`
 * block in config.json, shards of at most max_shard_bytes with
 * model.safetensors.index.json, and the tokenizer and generation files
 * copied. */
MNV_API mnv_status mnv_convert(const mnv_convert_params *params);

/* ------------------------------------------------------------------------ */
/* Chat (Harmony)                                                           */
/* ------------------------------------------------------------------------ */
/*
 * The Harmony chat format of gpt-oss. An mnv_chat holds one conversation: the
 * options of its system message, the developer instructions, tool
 * definitions and the list of messages. Rendering it gives, byte for byte,
 * what the reference renderer (openai/harmony) gives for a generation prompt
 * (mnv_chat_cot tells the one deliberate choice, which earlier reasoning to
 * drop, and how to get the reference's):
 *
 *   <|start|>system<|message|>...<|end|><|start|>developer<|message|>...<|end|>
 *   <|start|>user<|message|>What is 2 + 2?<|end|><|start|>assistant
 *
 * Every message is <|start|>HEADER<|message|>CONTENT END. HEADER is the role
 * (a tool message writes the tool's name instead), then " to=RECIPIENT",
 * "<|channel|>CHANNEL" and " CONTENT_TYPE", each when set. END is <|call|>
 * for an assistant message that has a recipient (a tool call) and <|end|>
 * otherwise; a final answer fed back therefore ends in <|end|>, never in the
 * decode-time stop token <|return|>.
 *
 * What the model generates is read back with an mnv_chat_parser, which splits
 * the tokens into messages by channel: "analysis" (chain of thought, not for
 * end users), "commentary" (tool calls and preambles) and "final" (the
 * answer). Generation stops at <|return|> (answer done) or <|call|> (a tool
 * call waits for its result): see mnv_chat_tokens.stop_ids.
 *
 * A typical turn: mnv_chat_add_message(user) -> mnv_chat_render_ids ->
 * mnv_generate with eos_ids = stop_ids, feeding each token to
 * mnv_chat_parser_push -> mnv_chat_parser_finish -> add the parsed messages
 * back with mnv_chat_add_message.
 *
 * Thread safety: an mnv_chat or mnv_chat_parser is used by one thread at a
 * time; the render functions only read the chat.
 */

typedef enum {
    MNV_ROLE_SYSTEM = 0,
    MNV_ROLE_DEVELOPER,
    MNV_ROLE_USER,
    MNV_ROLE_ASSISTANT,
    MNV_ROLE_TOOL,      /* a tool's output; the message's name is the tool */
    MNV_ROLE_COUNT
} mnv_chat_role;

/* "system", "developer", "user", "assistant", "tool"; "?" when out of range. */
MNV_API const char *mnv_chat_role_name(mnv_chat_role role);

/* One message. Strings are UTF-8 and NUL-terminated; NULL means "not set".
 * Zero-initialise, then set what you need. */
typedef struct {
    mnv_chat_role role;
    const char *name;         /* MNV_ROLE_TOOL: the tool, e.g. "functions.get_weather"
                                 (required; written in place of the role). Other roles:
                                 an optional author name, written "role:name". */
    const char *recipient;    /* " to=RECIPIENT": "functions.NAME" on a tool call,
                                 "assistant" on a tool's result; "all" is not written */
    const char *channel;      /* "analysis", "commentary" or "final" */
    const char *content_type; /* e.g. "<|constrain|>json" (written " <|constrain|>json",
                                 the marker as its special token) or "code" */
    const char *content;      /* the text; NULL is "" */
    size_t content_len;       /* output only (messages read from a chat or a parser):
                                 the bytes of content, which may hold NUL bytes.
                                 Ignored on input, where content ends at its NUL. */
} mnv_chat_message;

typedef enum {
    MNV_REASONING_LOW = 0,
    MNV_REASONING_MEDIUM,
    MNV_REASONING_HIGH,
    MNV_REASONING_OMIT  /* write no "Reasoning:" line */
} mnv_reasoning_effort;

typedef struct {
    uint32_t size;                 /* sizeof(mnv_chat_params) */
    int system_message;            /* 1 (default): render the system message first */
    const char *model_identity;    /* default "You are ChatGPT, a large language model
                                      trained by OpenAI."; NULL: no identity line */
    const char *knowledge_cutoff;  /* default "2024-06"; NULL: no such line */
    const char *current_date;      /* default NULL (no line); e.g. "2025-06-28" */
    mnv_reasoning_effort reasoning; /* default MNV_REASONING_MEDIUM */
    const char *const *channels;   /* the valid channels; default analysis, commentary, final */
    size_t n_channels;             /* default 3; 0: no "# Valid channels" line */
    int channel_required;          /* 1 (default): "Channel must be included for every message." */
    int function_tools_note;       /* 1: always add "Calls to these tools must go to the
                                      commentary channel: 'functions'."; 0 (default): only
                                      when function tools are defined (as the reference) */
    const char *instructions;      /* developer instructions (the usual "system prompt");
                                      NULL (default): none */
    uint32_t reserved[8];
} mnv_chat_params;

MNV_API mnv_chat_params mnv_chat_params_default(void);

typedef struct mnv_chat mnv_chat;

/* Create an empty conversation. The strings and the channel list of params
 * are copied. params may be NULL (the defaults). Fails with
 * MNV_ERR_INVALID_ARG on an unknown reasoning effort or a NULL channel. */
MNV_API mnv_status mnv_chat_create(const mnv_chat_params *params, mnv_chat **out);
MNV_API void mnv_chat_free(mnv_chat *chat);

/* A tool namespace. Function tools live in "functions", rendered in the
 * developer message; built-in tools (the reference's "browser", "python")
 * are rendered in the system message. Namespaces are written in byte order
 * of their names, tools in the order they were added. */
typedef struct {
    const char *name;          /* e.g. "functions", "browser" */
    const char *description;   /* NULL or text; with tools its lines become "// " comments */
    mnv_chat_role placement;   /* MNV_ROLE_DEVELOPER or MNV_ROLE_SYSTEM */
} mnv_chat_namespace;

/* Declare a namespace, or change the description and placement of one that
 * exists. MNV_ERR_INVALID_ARG on an empty name, or a placement other than
 * the system or the developer message. */
MNV_API mnv_status mnv_chat_add_namespace(mnv_chat *chat, const mnv_chat_namespace *ns);

typedef struct {
    const char *name;            /* e.g. "get_current_weather" */
    const char *description;     /* NULL or text (each line becomes a "// " comment) */
    const char *parameters_json; /* JSON schema of the argument object, rendered as the
                                    reference's TypeScript-like type; NULL: no arguments,
                                    "type NAME = () => any;" */
} mnv_chat_tool;

/* Add a tool to namespace ns (NULL: "functions"); a namespace not declared
 * before is created in the developer message. The schema is converted now:
 * MNV_ERR_FORMAT (naming the byte offset) when it is not valid JSON.
 * Known difference: a default written as an integral float (10.0) is shown
 * as 10; the reference shows 10.0. */
MNV_API mnv_status mnv_chat_add_tool(mnv_chat *chat, const char *ns, const mnv_chat_tool *tool);

/* Append a copy of msg. MNV_ERR_INVALID_ARG for a role out of range or a
 * tool message without a name. */
MNV_API mnv_status mnv_chat_add_message(mnv_chat *chat, const mnv_chat_message *msg);
/* Messages added so far (the system and developer messages of the params
 * are not counted), and message i (0-based); the strings are borrowed,
 * valid until that message is removed or the chat is freed. */
MNV_API size_t mnv_chat_n_messages(const mnv_chat *chat);
MNV_API mnv_status mnv_chat_get_message(const mnv_chat *chat, size_t i, mnv_chat_message *out);
/* Keep the first n messages, drop the rest (0 clears the conversation; the
 * system options, instructions and tools stay). n beyond the count is a no-op. */
MNV_API void mnv_chat_truncate(mnv_chat *chat, size_t n);

/* What to do with chain-of-thought (analysis) messages of earlier turns. */
typedef enum {
    /* Default: drop every analysis message that a later assistant "final"
     * message follows: answered turns lose their reasoning, while the
     * reasoning of a turn still calling tools is kept (docs/format.md,
     * "Handling reasoning output in subsequent sampling"; the HF chat
     * template does the same). Equal to MNV_COT_REFERENCE for one answered
     * turn. */
    MNV_COT_DROP_ANSWERED = 0,
    /* openai/harmony 0.0.8's auto_drop_analysis exactly: only when the last
     * assistant message is on "final", drop the analysis messages before
     * the first "final" message. */
    MNV_COT_REFERENCE,
    MNV_COT_KEEP         /* keep every message */
} mnv_chat_cot;

typedef struct {
    uint32_t size;             /* sizeof(mnv_chat_render_params) */
    int add_generation_prompt; /* 1 (default): end with "<|start|>assistant" */
    mnv_chat_cot cot;          /* default MNV_COT_DROP_ANSWERED */
    uint32_t reserved[8];
} mnv_chat_render_params;

MNV_API mnv_chat_render_params mnv_chat_render_params_default(void);

/* Render the conversation as text (params NULL: the defaults). Writes at most
 * cap bytes plus a NUL when room allows; *len_out receives the full length
 * (without the NUL); MNV_ERR_BUFFER_TOO_SMALL when cap <= that length (ask
 * with cap 0 first; text may be NULL then). MNV_ERR_INVALID_ARG for a tool message
 * without a name. Note: text inside messages is taken as plain text, so
 * render_ids, not mnv_tokenize of this text, is what a model must see when
 * a message contains a special token's spelling such as "<|end|>". */
MNV_API mnv_status mnv_chat_render_text(const mnv_chat *chat, const mnv_chat_render_params *params,
                                char *text, size_t cap, size_t *len_out);

/* Render the conversation as token ids for tok, as the reference does:
 * the harmony markers as their special ids, each text piece encoded on its
 * own and without special-token matching. Writes at most cap ids; *n_out
 * receives the full count; MNV_ERR_BUFFER_TOO_SMALL when it exceeds cap (ids
 * may be NULL when cap is 0). MNV_ERR_UNSUPPORTED when tok lacks the harmony tokens. */
MNV_API mnv_status mnv_chat_render_ids(const mnv_chat *chat, const mnv_tokenizer *tok,
                               const mnv_chat_render_params *params, int32_t *ids, size_t cap,
                               size_t *n_out);

/* The harmony special tokens of a tokenizer, looked up by their spelling. */
typedef struct {
    int32_t start_id;      /* <|start|>     200006 in o200k_harmony */
    int32_t end_id;        /* <|end|>       200007 */
    int32_t message_id;    /* <|message|>   200008 */
    int32_t channel_id;    /* <|channel|>   200005 */
    int32_t constrain_id;  /* <|constrain|> 200003 */
    int32_t return_id;     /* <|return|>    200002: the final answer is done */
    int32_t call_id;       /* <|call|>      200012: a tool call waits for its result */
    int32_t stop_ids[2];   /* {return_id, call_id}: pass as mnv_generate_params.eos_ids
                              (n_eos = 2) to stop where the reference stops sampling */
} mnv_chat_tokens;

/* Fill *out from tok. MNV_ERR_UNSUPPORTED (naming the token) when a marker
 * does not encode to exactly one id, i.e. the tokenizer is not a harmony one. */
MNV_API mnv_status mnv_chat_tokens_lookup(const mnv_tokenizer *tok, mnv_chat_tokens *out);

/* ---- reading the model's output ----------------------------------------- */

typedef struct mnv_chat_parser mnv_chat_parser;

/* How a parsed message ended. */
typedef enum {
    MNV_CHAT_END_END = 0,    /* <|end|>: more messages may follow */
    MNV_CHAT_END_RETURN,     /* <|return|>: the answer is complete (stop) */
    MNV_CHAT_END_CALL,       /* <|call|>: a tool call (stop, run the tool) */
    MNV_CHAT_END_INTERRUPTED, /* a new <|start|> or <|channel|> began before its end */
    MNV_CHAT_END_TRUNCATED   /* the stream finished (mnv_chat_parser_finish) inside it */
} mnv_chat_end;

typedef enum {
    MNV_CHAT_EVENT_HEADER = 0, /* a message began: msg holds its header, no content yet */
    MNV_CHAT_EVENT_CONTENT,    /* text of the current message: delta, delta_len */
    MNV_CHAT_EVENT_MESSAGE     /* a message is complete: msg holds all of it; see end */
} mnv_chat_event_kind;

typedef struct {
    mnv_chat_event_kind kind;
    const mnv_chat_message *msg; /* borrowed, valid during the callback only */
    const char *delta;           /* CONTENT: new text (complete UTF-8 characters when
                                    fed token ids), not NUL-terminated */
    size_t delta_len;
    mnv_chat_end end;            /* MESSAGE: how it ended */
    int is_tool_call;            /* 1 when msg is an assistant message to a tool: its
                                    recipient is set and is not "all", "user" or
                                    "assistant" -- on any channel (function calls come on
                                    "commentary", built-in tools on "analysis") */
} mnv_chat_event;

typedef void (*mnv_chat_event_callback)(void *user_data, const mnv_chat_event *ev);

typedef struct {
    uint32_t size;               /* sizeof(mnv_chat_parser_params) */
    int after_start;             /* 1 (default): the stream continues a prompt that ends
                                    in "<|start|>assistant", so the first message's header
                                    comes without <|start|> and its role is assistant.
                                    0: the stream begins with <|start|>ROLE. */
    mnv_chat_event_callback on_event; /* may be NULL */
    void *user_data;
    uint32_t reserved[8];
} mnv_chat_parser_params;

MNV_API mnv_chat_parser_params mnv_chat_parser_params_default(void);

/* Create a parser. tok decodes pushed ids and names the harmony tokens
 * (MNV_ERR_UNSUPPORTED when it has none); it may be NULL for a parser fed
 * only text. tok must outlive the parser. params may be NULL.
 *
 * The parser never fails on what a model writes. Beyond the reference's
 * grammar it accepts: a recipient in the header's role or channel part, with
 * or without a space before <|constrain|>; a tool call on any channel; a
 * message without <|message|> (its header text becomes content, as the
 * reference's non-strict mode does) -- already while streaming once the
 * "header" holds a newline and a word of content, or grows past 256 bytes,
 * so that a model that forgot its header still streams; text or <|channel|>
 * where <|start|> was expected (an assistant message); a new <|start|> or
 * <|channel|> inside a message (the message ends, INTERRUPTED); a stray
 * <|message|> or <|constrain|> inside content (dropped); ids outside the
 * vocabulary (U+FFFD); tokens after <|return|> or <|call|> (parsed as more
 * messages). The result does not depend on how text is split into pushes. */
MNV_API mnv_status mnv_chat_parser_create(const mnv_tokenizer *tok, const mnv_chat_parser_params *params,
                                  mnv_chat_parser **out);
MNV_API void mnv_chat_parser_free(mnv_chat_parser *p);

/* Feed one generated token id. Events are delivered before it returns.
 * Fails only with MNV_ERR_NOMEM, or MNV_ERR_INVALID_ARG without a tokenizer. */
MNV_API mnv_status mnv_chat_parser_push(mnv_chat_parser *p, int32_t id);
/* Feed generated text, the markers written out ("<|channel|>final<|message|>").
 * A marker may be split across calls. Content deltas are the bytes given. */
MNV_API mnv_status mnv_chat_parser_push_text(mnv_chat_parser *p, const char *text, size_t len);
/* End of the stream: an unfinished message is completed as TRUNCATED (bytes
 * of an incomplete UTF-8 character become U+FFFD). Pushing more afterwards
 * starts a new stream that expects <|start|>. */
MNV_API mnv_status mnv_chat_parser_finish(mnv_chat_parser *p);
/* Forget all messages and state, as freshly created. */
MNV_API void mnv_chat_parser_reset(mnv_chat_parser *p);

/* 1 once <|return|> or <|call|> was seen: sampling should stop. */
MNV_API int mnv_chat_parser_stopped(const mnv_chat_parser *p);
/* Completed messages, in order, and message i with how it ended (end may be
 * NULL). Strings are borrowed until the parser is reset or freed. */
MNV_API size_t mnv_chat_parser_n_messages(const mnv_chat_parser *p);
MNV_API mnv_status mnv_chat_parser_message(const mnv_chat_parser *p, size_t i, mnv_chat_message *msg,
                                   mnv_chat_end *end);

/* ------------------------------------------------------------------------ */
/* Chat templates (Hugging Face models)                                     */
/* ------------------------------------------------------------------------ */
/*
 * Every model but gpt-oss states its chat format as a Jinja template:
 * chat_template.jinja in its directory, or "chat_template" in
 * tokenizer_config.json (a string, or a list of named templates: "default",
 * and "tool_use" for requests with tools). Rendering gives what transformers'
 * apply_chat_template gives (bos_token and eos_token from
 * tokenizer_config.json, tools and documents as None when absent). Before
 * rendering, an assistant tool call's "arguments" given as a JSON string
 * (OpenAI's form) becomes the object it encodes, as transformers' templates
 * expect (a template that fails on the object gets the string instead); for
 * a template that does not read content parts, a list of text parts becomes
 * their texts joined by newlines, and a null content an empty string.
 */

/* Renders request_json, an OpenAI chat request body ("messages", optional
 * "tools", "chat_template_kwargs" whose keys become template variables, e.g.
 * enable_thinking), with the chat template of model_dir. On success
 * *prompt_out is the prompt text (free with mnv_chat_prompt_free).
 * MNV_ERR_UNSUPPORTED when the model has no chat template; MNV_ERR_FORMAT
 * naming the file, key and line when the template does not parse or the
 * request is not JSON; MNV_ERR_INVALID_ARG naming the template line when
 * rendering fails (the template's raise_exception, a type error, a limit on
 * output, memory, call depth or iterations). Thread-safe. */
MNV_API mnv_status mnv_chat_template_render(const char *model_dir, const char *request_json,
                                            int add_generation_prompt, char **prompt_out);
MNV_API void mnv_chat_prompt_free(char *prompt);

#ifdef __cplusplus
}
#endif
#endif /* MINERVA_H */
