/* Sessions: a KV cache, a graph, an executor on a backend. */
#ifndef MNV_SESSION_H
#define MNV_SESSION_H

#include <stdatomic.h>

#include "backend/backend.h"
#include "model/model.h"

struct mnv_session {
    mnv_model *model;
    mnv_session_params params;
    mnv_backend *be;
    mnv_executor *ex;
    mnv_graph *g;
    mnv_kv_cache kv;
    int32_t n_past;
    float *last_logits;      /* n_vocab: logits of the last evaluated token */
    bool logits_valid;       /* last_logits belong to the token at n_past - 1 */
    int32_t *scratch_ids;    /* n_batch * 4 ints for batch building */
    double last_build_sec, last_plan_sec, last_run_sec; /* host overhead figures */
    atomic_int cancel;       /* mnv_session_cancel's request, set from any thread */
};

/* MNV_ERR_CANCELLED (consuming the request) when mnv_session_cancel asked
 * for it, else MNV_OK. `where` names the point for the message. */
mnv_status mnv__session_check_cancel(mnv_session *s, const char *where);

/* Run one forward pass of a ragged batch on a session's cache (used by
 * eval and by tests that batch several sequences). logits_out: n_out rows. */
mnv_status mnv_session_forward(mnv_session *s, const mnv_batch *b, float *logits_out);
/* Create a session whose cache has n_seq sequence slots. */
mnv_status mnv_session_create_multi(mnv_model *model, const mnv_session_params *params, int32_t n_seq,
                                    mnv_session **out);

#endif
