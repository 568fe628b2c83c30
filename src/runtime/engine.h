/* The engine's internal interface: what the session layer builds on.
 *
 * The engine owns one backend (one thread pool), the KV block pool, the
 * cache of planned step graphs and the scheduler of requests. Every call
 * here comes from the thread that runs steps (the session's caller, or the
 * engine's step thread). */
#ifndef MNV_ENGINE_H
#define MNV_ENGINE_H

#include "backend/backend.h"
#include "model/model.h"
#include "runtime/kv_pool.h"

/* One sequence's share of a step: n tokens appended at its length. */
typedef struct {
    int32_t seq;        /* pool sequence */
    const int32_t *ids; /* the tokens */
    int32_t n;
    int32_t out_from;   /* logits of rows [out_from, n) are wanted; n: none */
} mnv__step_part;

/* One forward pass over parts of distinct sequences: make room in the pool
 * (MNV_ERR_NOMEM when it is full, nothing evaluated), fill the step's
 * inputs, run the graph of this shape (cached: built and planned once),
 * commit the tokens. logits (may be NULL when no row is wanted): the wanted
 * rows, part after part. argmax (may be NULL): each wanted row's argmax
 * (core/argmax.h), computed where the logits are, so that greedy requests
 * need no rows of logits brought back. cands (may be NULL): each wanted row's
 * sampling candidates (MNV_TOP_CANDS_ROW floats, core/topcands.h), also
 * computed where the logits are. MNV_ERR_CANCELLED when the backend's
 * abort flag stopped the pass: nothing committed. */
mnv_status mnv__engine_run(mnv_engine *e, const mnv__step_part *parts, int32_t n_parts, float *logits,
                           int32_t *argmax, float *cands);
/* Copy the model's weights to the engine's device now (nothing on the CPU),
 * reporting (bytes copied, total) as mnv_session_load_weights says. */
mnv_status mnv__engine_place_weights(mnv_engine *e, mnv_progress_callback progress, void *user_data);
/* Row `row` of the wanted logits of the last pass (vocab_size floats), for
 * a request its candidates could not decide; valid until the next pass. */
mnv_status mnv__engine_read_logits(mnv_engine *e, int32_t row, float *dst);

/* An engine without its request scheduler (no step thread, no locks): the
 * session drives it with mnv__engine_run alone. */
mnv_status mnv__engine_create(mnv_model *model, const mnv_engine_params *params, mnv_engine **out);
void mnv__engine_destroy(mnv_engine *e);

/* The KV pool parameters of a configuration: layer groups by window, the
 * element types (the Q8/Q4 group: mnv_kv_default_group), block size, sequences and token counts (max_tokens 0 and
 * budget 0: max_seqs * max_seq_tokens). */
void mnv__kv_pool_params(const mnv_model_config *c, mnv_kv_type k_type, mnv_kv_type v_type, int32_t block_tokens,
                         int32_t max_seqs, int32_t max_seq_tokens, int64_t max_tokens, uint64_t budget_bytes,
                         mnv_kv_pool_params *pp);
/* The K and V element types of params: a type MNV_KV_DEFAULT follows
 * kv_dtype (F32, F16 or BF16). MNV_ERR_INVALID_ARG names the bad field,
 * prefixed by who. */
mnv_status mnv__kv_types(const char *who, mnv_dtype kv_dtype, int32_t kv_type_k, int32_t kv_type_v, mnv_kv_type *k,
                         mnv_kv_type *v);

mnv_kv_pool *mnv__engine_pool(mnv_engine *e);
/* Benchmarks at depth (engine_fill.c): append the n tokens ids to seq with
 * random K/V values written straight into its blocks instead of computed
 * (the cost of decoding after them is the same; the values mean nothing),
 * chunk tokens at a time as a prefill of that batch size would. */
mnv_status mnv__engine_fill_random(mnv_engine *e, int32_t seq, const int32_t *ids, int64_t n, int64_t chunk,
                                   uint64_t seed);
/* Tests: 0 builds and plans every step's graph afresh (the reference for
 * replayed graphs). */
void mnv__engine_set_graph_cache(mnv_engine *e, bool on);
mnv_backend *mnv__engine_backend(mnv_engine *e);

/* Figures of the last forward pass. */
typedef struct {
    int32_t n_nodes;
    bool cache_hit;
    double build_sec, plan_sec, fill_sec, run_sec;
    size_t arena_bytes;
    mnv_graph *graph;
} mnv__step_figures;
void mnv__engine_last_step(const mnv_engine *e, mnv__step_figures *out);

#endif
