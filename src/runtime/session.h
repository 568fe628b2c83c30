/* Sessions: the single-user API as a layer over a private engine. A session
 * has one or more local sequences (tests batch several), each a pool
 * sequence plus its token history: truncating or rewriting a sequence ends
 * its pool sequence and starts a new one from the history, which the prefix
 * cache serves except for the last partly filled block. */
#ifndef MNV_SESSION_H
#define MNV_SESSION_H

#include <stdatomic.h>

#include "runtime/engine.h"

typedef struct {
    int32_t seq;     /* pool sequence, -1: none yet */
    int32_t *hist;   /* the tokens of the context (n_ctx) */
    int32_t n;       /* tokens in the context */
} mnv__local_seq;

struct mnv_session {
    mnv_model *model;
    mnv_session_params params;
    mnv_engine *e;           /* private: max_seqs = n_seq, driven by this session */
    int32_t n_seq;
    mnv__local_seq *seqs;
    int32_t n_past;          /* tokens in sequence 0's context */
    float *last_logits;      /* n_vocab: logits of the last evaluated token */
    bool logits_valid;       /* last_logits belong to the token at n_past - 1 */
    mnv__step_part *parts;   /* n_seq */
    atomic_int cancel;       /* mnv_session_cancel's request, set from any thread */
};

/* MNV_ERR_CANCELLED (consuming the request) when mnv_session_cancel asked
 * for it, else MNV_OK. `where` names the point for the message. */
mnv_status mnv__session_check_cancel(mnv_session *s, const char *where);

/* One forward pass of a ragged batch over the session's local sequences
 * (used by eval and by tests that batch several sequences): each
 * sequence's tokens in the batch must be at consecutive positions
 * p0, p0 + 1, ... with p0 at most its length (p0 below it rewrites the
 * context from p0). logits_out: n_out rows. */
mnv_status mnv_session_forward(mnv_session *s, const mnv_batch *b, float *logits_out);
/* Benchmarks: append the n tokens ids to sequence 0's context with random
 * K/V (mnv__engine_fill_random) instead of evaluating them; the next
 * evaluation has no logits of them to continue from. A fill past the
 * context fails with nothing changed; a failure of the pool empties the
 * context. */
mnv_status mnv__session_fill_random(mnv_session *s, const int32_t *ids, int32_t n);
/* Create a session with n_seq local sequences. */
mnv_status mnv_session_create_multi(mnv_model *model, const mnv_session_params *params, int32_t n_seq,
                                    mnv_session **out);

#endif
