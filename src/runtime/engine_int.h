/* The engine's object, shared by engine.c (parts, forward pass, graph
 * cache) and engine_sched.c (requests and their scheduler). */
#ifndef MNV_ENGINE_INT_H
#define MNV_ENGINE_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "runtime/engine.h"
#include "runtime/gen.h"

#define MNV_GCACHE 16 /* planned step graphs kept, least recently used replaced */

/* A planned graph for one step shape. */
typedef struct {
    int32_t T, S, n_out;              /* tokens, sequences, logits rows */
    bool all_rows;
    bool with_cands;                  /* the rows' sampling candidates built too */
    int32_t W[MNV_MAX_KV_GROUPS];     /* block table widths (powers of two) */
    mnv_graph *g;
    mnv_step_inputs in;
    mnv_array *logits;                /* NULL: not built */
    mnv_array *argmax;                /* (n_out) i32, NULL when n_out is 0 */
    mnv_array *cands;                 /* (n_out, MNV_TOP_CANDS_ROW), NULL unless with_cands */
    size_t arena;
    uint64_t used;                    /* LRU tick, 0: never */
} mnv__gentry;

typedef struct mnv__request mnv__request;

struct mnv_engine {
    mnv_model *model;
    mnv_engine_params p;
    mnv_backend *be;
    mnv_executor *ex;
    mnv_kv_pool *pool;
    mnv_buffer *kv_mem; /* the pool's block memory, on the backend */
    mnv_kv_cache kv;                  /* the model's view of the pool */
    int32_t n_groups, *layer_group, *layer_index;
    int32_t window[MNV_MAX_KV_GROUPS]; /* per layer group: 0 full attention, else its window */
    void **kv_k, **kv_v;
    mnv__gentry gc[MNV_GCACHE];
    uint64_t tick;
    bool no_graph_cache;
    /* step arrays */
    int32_t *b_ids;                   /* ids, pos, seq, rows: b_cap tokens each, + max_seqs */
    int32_t b_cap;
    int32_t **b_tables;
    size_t b_tcap[MNV_MAX_KV_GROUPS];
    int32_t *b_slots;
    mnv__step_figures last;
    mnv_engine_stats stats;           /* step-thread counters (published under mu) */

    /* requests: the inbox and the registry are guarded by mu */
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    bool sync_ready;
    mnv__request *inbox, *inbox_tail;
    mnv__request **reg;               /* live requests (not yet collected) */
    int32_t n_reg, cap_reg;
    uint64_t next_id;
    int32_t n_cancel_pending;
    mnv_engine_stats snap;            /* published statistics */
    /* step-thread state */
    mnv__request **running;           /* max_seqs, admission order */
    int32_t n_running;
    mnv__request *wait_head, *wait_tail;
    int32_t n_waiting;
    mnv__step_part *parts;
    mnv__request **part_req;
    float *out_logits;                /* max_seqs rows of vocab */
    int32_t *out_argmax;              /* max_seqs ids: the rows' argmax */
    float *out_cands;                 /* max_seqs rows of MNV_TOP_CANDS_ROW: sampling candidates */
    mnv__gentry *last_run;            /* the entry of the last pass (its logits stay until the next) */
    pthread_t thread;
    bool thread_started;
    atomic_int stop;
    atomic_int abort;                 /* the backend's abort flag: engine shutdown */
};

#endif
