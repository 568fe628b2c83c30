/* One generation's token handling, shared by mnv_generate (a session) and
 * the engine's requests: sample from logits, stream text (complete UTF-8,
 * held back while it may begin a stop string), stop conditions. */
#ifndef MNV_GEN_H
#define MNV_GEN_H

#include "model/model.h"
#include "runtime/sampler.h"

typedef struct {
    char *text; /* decoded but not yet delivered */
    size_t len, cap;
} mnv__pending_text;

typedef struct {
    const mnv_model *model;
    const mnv_generate_params *gp; /* must outlive the generation */
    mnv_sampler *smp;
    mnv_detok_stream *ds;
    mnv__pending_text pend;
    mnv_generate_result *res;
    float *biased;     /* (vocab) logits with the logit biases added; NULL without biases */
} mnv__gen;

/* The log-probabilities of logits (n floats) for token tok and the n_top
 * most likely tokens (top_ids, top_lp: n_top slots each), for on_logprobs. */
void mnv__logprobs(const float *logits, int32_t n, int32_t tok, int32_t n_top, int32_t *top_ids, float *top_lp,
                   float *tok_lp);

/* Copy params (NULL: defaults) checking its size. */
mnv_status mnv__gen_params(const mnv_generate_params *params, mnv_generate_params *out, const char *who);
/* Sampler chain and streaming decoder; the prompt primes both (its text is
 * context for the decoder, its ids for penalties). On failure nothing is held. */
mnv_status mnv__gen_begin(mnv__gen *g, const mnv_model *m, const mnv_generate_params *gp, const int32_t *prompt,
                          size_t n_prompt, mnv_generate_result *res);
/* What a pass hands a generation for its next token, each computed where
 * the logits are: the row of logits (NULL when not brought back), its
 * sampling candidates (core/topcands.h; NULL when not computed) and its
 * argmax (core/argmax.h; -1 when not computed). */
typedef struct {
    const float *logits;
    const float *cands;
    int32_t argmax;
} mnv__gen_row;

/* Pick the next token from row (the logits where given, else the
 * candidates, else the argmax, as the generation needs), deliver its text
 * through on_token and decide whether generation ends (*done,
 * res->stop_reason set). ctx_full: the context cannot take the sampled
 * token. *need_logits (may be NULL only when row->logits is given): the
 * candidates could not decide (mnv__sampler_sample_cands); nothing
 * happened, call again with the row's logits. */
mnv_status mnv__gen_step(mnv__gen *g, const mnv__gen_row *row, bool ctx_full, int32_t *tok_out, bool *done,
                         bool *need_logits);
/* Whether the next mnv__gen_step needs more than the argmax: a sampler
 * other than greedy alone, a logit bias, or log-probabilities to report. */
bool mnv__gen_wants_logits(const mnv__gen *g);
/* Whether candidates may do instead of the logits: a sampler that cuts
 * (mnv__sampler_uses_cands), no logit bias, no log-probabilities. */
bool mnv__gen_wants_cands(const mnv__gen *g);
void mnv__gen_end(mnv__gen *g);

#endif
