/* The sampler chain: penalties -> top-k -> top-p -> min-p -> temperature ->
 * draw (or greedy). Each stage is a tiny object with apply/accept/reset/free;
 * the chain is itself a sampler. */
#ifndef MNV_SAMPLER_H
#define MNV_SAMPLER_H

#include "core/core.h"

typedef struct {
    int32_t id;
    float logit;
    float p;
} mnv_token_cand;

typedef struct {
    mnv_token_cand *data;  /* candidates */
    size_t size;
    int sorted;            /* 1 when sorted by logit, descending */
    int32_t selected;      /* index into data of the chosen token, -1 if none yet */
    /* Candidates taken from a device's top few (core/topcands.h): partial
     * while tokens of the vocabulary are missing from data; each missing
     * logit is at most bound; tail is their summed weight exp(l - max
     * logit), or < 0 once penalties made it unknown. A stage whose answer
     * depends on them sets incomplete and changes nothing. */
    int partial, incomplete;
    float bound;
    double tail;
} mnv_cand_array;

typedef struct mnv_sampler mnv_sampler;

typedef struct {
    const char *name;
    void (*apply)(mnv_sampler *s, mnv_cand_array *c);
    void (*accept)(mnv_sampler *s, int32_t token);   /* may be NULL */
    void (*reset)(mnv_sampler *s);                   /* may be NULL */
    void (*free)(mnv_sampler *s);                    /* may be NULL */
} mnv_sampler_iface;

struct mnv_sampler {
    const mnv_sampler_iface *iface;
    void *ctx;
};

/* Build the default chain from public params (greedy when temperature <= 0,
 * penalties still applied). n_vocab bounds token ids. */
mnv_status mnv_sampler_chain_create(const mnv_sampler_params *p, int32_t n_vocab, mnv_sampler **out);
/* Sample a token from logits (n_vocab floats). Does not call accept. */
int32_t mnv_sampler_sample(mnv_sampler *s, const float *logits, int32_t n_vocab);
/* The same from a row of candidates (core/topcands.h) of the n_vocab
 * logits: the same token, where the candidates decide it. Returns -2 when
 * they cannot (a cut that falls beyond them, a draw over the whole
 * vocabulary, penalties that could raise a missing token): nothing
 * changed, sample from the logits instead. */
int32_t mnv__sampler_sample_cands(mnv_sampler *s, const float *cands, int32_t n_vocab);
/* Whether mnv__sampler_sample_cands can decide for this chain at all: one
 * whose penalties (if any) only lower logits and that cuts the vocabulary
 * (top-k within the candidates, top-p or min-p) or picks the best before
 * drawing. */
bool mnv__sampler_uses_cands(const mnv_sampler *s);
/* A stage's part in that: 1 decides from the candidates (a cut, greedy),
 * 0 changes nothing, -1 needs the whole vocabulary (sampler_stages.c). */
int mnv__sampler_cands_kind(const mnv_sampler *s);
void mnv_sampler_accept(mnv_sampler *s, int32_t token);
void mnv_sampler_reset(mnv_sampler *s);
void mnv_sampler_free(mnv_sampler *s);

/* The individual stages, usable alone (for tests and custom chains). */
mnv_sampler *mnv_sampler_greedy(void);
bool mnv__sampler_is_greedy(const mnv_sampler *s);
/* A chain of greedy alone: its token is the logits' argmax (core/argmax.h). */
bool mnv__sampler_greedy_only(const mnv_sampler *s);
mnv_sampler *mnv_sampler_dist(uint64_t seed);       /* draw from softmax of logits */
mnv_sampler *mnv_sampler_temperature(float t);
mnv_sampler *mnv_sampler_top_k(int32_t k);
mnv_sampler *mnv_sampler_top_p(float p, size_t min_keep);
mnv_sampler *mnv_sampler_min_p(float p, size_t min_keep);
mnv_sampler *mnv_sampler_penalties(int32_t last_n, float repeat, float freq, float present);
mnv_sampler *mnv_sampler_chain(void);
/* Append a stage; the chain takes ownership. */
void mnv_sampler_chain_add(mnv_sampler *chain, mnv_sampler *stage);
/* Apply the stages to an already-built candidate array (selected is set). */
void mnv_sampler_apply(mnv_sampler *s, mnv_cand_array *c);

/* ---- added notes and internals ------------------------------------------
 * Candidate arrays: filters (top-k, top-p, min-p, temperature <= 0) shrink
 * `size` and keep the survivors in data[0, size); selectors (greedy, dist)
 * set `selected`. `p` is filled (normalized) by dist only. Candidates are
 * ordered by logit descending, ties to the lower id, everywhere (so greedy,
 * top-k = 1 and sorting agree).
 *
 * Ownership: mnv_sampler_free calls iface->free (which releases what ctx
 * owns) and then free()s the mnv_sampler itself, so a custom stage must be
 * allocated with malloc, or with mnv__sampler_new below.
 *
 * mnv_sampler_sample returns -1 (with mnv_last_error set) on a NULL or empty
 * input, on out-of-memory, or when the chain selected nothing (no greedy or
 * dist stage). NaN logits are read as -inf. A chain keeps its candidate
 * buffer, so it allocates only when n_vocab grows (never, for a chain from
 * mnv_sampler_chain_create at that n_vocab); a lone stage passed to it
 * allocates a temporary buffer per call. Stage constructors return NULL when
 * out of memory (or, for penalties, when last_n < -1); adding NULL to a chain
 * marks the chain broken, and mnv_sampler_sample on it fails.
 * A sampler is not thread safe: one sampler per sequence. */

/* Allocate a sampler whose zeroed ctx of ctx_size bytes lives in the same
 * block (released by mnv_sampler_free). NULL when out of memory. */
mnv_sampler *mnv__sampler_new(const mnv_sampler_iface *iface, size_t ctx_size);

#endif
