/* The sampler chain (itself a sampler), the default chain built from the
 * public params, and sampling from a row of logits. The stages live in
 * sampler_stages.c. */
#include "runtime/sampler.h"

#include "core/argmax.h"
#include "core/topcands.h"

#include <float.h>
#include <math.h>
#include <stdalign.h>
#include <stdlib.h>

mnv_sampler_params mnv_sampler_params_default(void) {
    return (mnv_sampler_params){
        .size = sizeof(mnv_sampler_params),
        .temperature = 0.8f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .repeat_penalty = 1.0f,
        .repeat_last_n = 64,
        .frequency_penalty = 0.0f,
        .presence_penalty = 0.0f,
        .seed = 0,
    };
}

mnv_sampler *mnv__sampler_new(const mnv_sampler_iface *iface, size_t ctx_size) {
    const size_t a = alignof(max_align_t), off = (sizeof(mnv_sampler) + a - 1) / a * a;
    mnv_sampler *s = calloc(1, off + ctx_size);
    if (!s) return NULL;
    s->iface = iface;
    s->ctx = ctx_size ? (char *)s + off : NULL;
    return s;
}

void mnv_sampler_apply(mnv_sampler *s, mnv_cand_array *c) {
    if (s && c) s->iface->apply(s, c);
}

void mnv_sampler_accept(mnv_sampler *s, int32_t token) {
    if (s && s->iface->accept) s->iface->accept(s, token);
}

void mnv_sampler_reset(mnv_sampler *s) {
    if (s && s->iface->reset) s->iface->reset(s);
}

void mnv_sampler_free(mnv_sampler *s) {
    if (!s) return;
    if (s->iface->free) s->iface->free(s);
    free(s);
}

/* ---- the chain --------------------------------------------------------------- */

enum { CHAIN_MAX = 16 };

typedef struct {
    mnv_sampler *stages[CHAIN_MAX];
    int n;
    int broken;          /* a stage failed to allocate or overflowed CHAIN_MAX */
    mnv_token_cand *buf; /* (cap) candidates reused by mnv_sampler_sample */
    size_t cap;
} chain_ctx;

static void chain_apply(mnv_sampler *s, mnv_cand_array *c) {
    chain_ctx *ch = s->ctx;
    for (int i = 0; i < ch->n && !c->incomplete; i++) ch->stages[i]->iface->apply(ch->stages[i], c);
}

static void chain_accept(mnv_sampler *s, int32_t token) {
    chain_ctx *ch = s->ctx;
    for (int i = 0; i < ch->n; i++) mnv_sampler_accept(ch->stages[i], token);
}

static void chain_reset(mnv_sampler *s) {
    chain_ctx *ch = s->ctx;
    for (int i = 0; i < ch->n; i++) mnv_sampler_reset(ch->stages[i]);
}

static void chain_free(mnv_sampler *s) {
    chain_ctx *ch = s->ctx;
    for (int i = 0; i < ch->n; i++) mnv_sampler_free(ch->stages[i]);
    free(ch->buf);
}

static const mnv_sampler_iface chain_iface = {"chain", chain_apply, chain_accept, chain_reset, chain_free};

mnv_sampler *mnv_sampler_chain(void) { return mnv__sampler_new(&chain_iface, sizeof(chain_ctx)); }

void mnv_sampler_chain_add(mnv_sampler *chain, mnv_sampler *stage) {
    if (!chain || chain->iface != &chain_iface) {
        mnv_sampler_free(stage);
        return;
    }
    chain_ctx *ch = chain->ctx;
    if (!stage || ch->n == CHAIN_MAX) {
        ch->broken = 1;
        mnv_sampler_free(stage);
        return;
    }
    ch->stages[ch->n++] = stage;
}

static int chain_reserve(chain_ctx *ch, size_t n) {
    if (n <= ch->cap) return 1;
    mnv_token_cand *b = realloc(ch->buf, n * sizeof *b);
    if (!b) return 0;
    ch->buf = b;
    ch->cap = n;
    return 1;
}

static mnv_status check_params(const mnv_sampler_params *p, int32_t n_vocab) {
    if (!p) return mnv_set_error(MNV_ERR_INVALID_ARG, "sampler: params is NULL");
    if (p->size != sizeof *p)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "sampler: params.size %u, expected %zu (use mnv_sampler_params_default)",
                             p->size, sizeof *p);
    if (n_vocab <= 0) return mnv_set_error(MNV_ERR_INVALID_ARG, "sampler: n_vocab %d must be positive", n_vocab);
    if (isnan(p->temperature) || isnan(p->top_p) || isnan(p->min_p))
        return mnv_set_error(MNV_ERR_INVALID_ARG, "sampler: temperature, top_p and min_p must not be NaN");
    if (!(p->repeat_penalty > 0.0f) || isinf(p->repeat_penalty))
        return mnv_set_error(MNV_ERR_INVALID_ARG, "sampler: repeat_penalty %g must be finite and > 0",
                             (double)p->repeat_penalty);
    if (p->repeat_last_n < -1)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "sampler: repeat_last_n %d must be >= -1", p->repeat_last_n);
    if (!isfinite(p->frequency_penalty) || !isfinite(p->presence_penalty))
        return mnv_set_error(MNV_ERR_INVALID_ARG, "sampler: frequency_penalty and presence_penalty must be finite");
    return MNV_OK;
}

mnv_status mnv_sampler_chain_create(const mnv_sampler_params *p, int32_t n_vocab, mnv_sampler **out) {
    if (!out) return mnv_set_error(MNV_ERR_INVALID_ARG, "sampler: out is NULL");
    *out = NULL;
    mnv_status st = check_params(p, n_vocab);
    if (st != MNV_OK) return st;
    mnv_sampler *s = mnv_sampler_chain();
    if (!s || !chain_reserve(s->ctx, (size_t)n_vocab)) {
        mnv_sampler_free(s);
        return mnv_set_error(MNV_ERR_NOMEM, "sampler: out of memory for %d candidates", n_vocab);
    }
    int penalties = p->repeat_last_n != 0 &&
                    (p->repeat_penalty != 1.0f || p->frequency_penalty != 0.0f || p->presence_penalty != 0.0f);
    if (penalties)
        mnv_sampler_chain_add(s, mnv_sampler_penalties(p->repeat_last_n, p->repeat_penalty, p->frequency_penalty,
                                                       p->presence_penalty));
    if (p->temperature <= 0.0f) {
        mnv_sampler_chain_add(s, mnv_sampler_greedy());
    } else {
        if (p->top_k > 0) mnv_sampler_chain_add(s, mnv_sampler_top_k(p->top_k));
        if (p->top_p < 1.0f) mnv_sampler_chain_add(s, mnv_sampler_top_p(p->top_p, 1));
        if (p->min_p > 0.0f) mnv_sampler_chain_add(s, mnv_sampler_min_p(p->min_p, 1));
        mnv_sampler_chain_add(s, mnv_sampler_temperature(p->temperature));
        mnv_sampler_chain_add(s, mnv_sampler_dist(p->seed));
    }
    if (((chain_ctx *)s->ctx)->broken) {
        mnv_sampler_free(s);
        return mnv_set_error(MNV_ERR_NOMEM, "sampler: out of memory building the chain");
    }
    *out = s;
    return MNV_OK;
}

bool mnv__sampler_greedy_only(const mnv_sampler *s) {
    return s && s->iface == &chain_iface && ((chain_ctx *)s->ctx)->n == 1 &&
           mnv__sampler_is_greedy(((chain_ctx *)s->ctx)->stages[0]);
}

/* The token a chain's apply selected, or -1 with the error set. */
static int32_t selected_id(const mnv_cand_array *c) {
    int32_t id = c->selected >= 0 && (size_t)c->selected < c->size ? c->data[c->selected].id : -1;
    if (id < 0) mnv_set_error(MNV_ERR_INVALID_ARG, "sampler: nothing selected (the chain needs a greedy or dist stage)");
    return id;
}

int32_t mnv_sampler_sample(mnv_sampler *s, const float *logits, int32_t n_vocab) {
    if (!s || !logits || n_vocab <= 0) {
        mnv_set_error(MNV_ERR_INVALID_ARG, "sampler: sample needs a sampler, logits and n_vocab > 0 (got %d)", n_vocab);
        return -1;
    }
    mnv_token_cand *buf, *tmp = NULL;
    if (mnv__sampler_greedy_only(s)) return mnv__argmax_row(logits, n_vocab); /* no candidates */
    if (s->iface == &chain_iface) {
        chain_ctx *ch = s->ctx;
        if (ch->broken) {
            mnv_set_error(MNV_ERR_NOMEM, "sampler: the chain lost a stage to an allocation failure");
            return -1;
        }
        if (!chain_reserve(ch, (size_t)n_vocab)) {
            mnv_set_error(MNV_ERR_NOMEM, "sampler: out of memory for %d candidates", n_vocab);
            return -1;
        }
        buf = ch->buf;
    } else if (!(buf = tmp = malloc((size_t)n_vocab * sizeof *buf))) {
        mnv_set_error(MNV_ERR_NOMEM, "sampler: out of memory for %d candidates", n_vocab);
        return -1;
    }
    for (int32_t i = 0; i < n_vocab; i++) buf[i] = (mnv_token_cand){i, mnv__clean_logit(logits[i]), 0.0f};
    mnv_cand_array c = {.data = buf, .size = (size_t)n_vocab, .selected = -1};
    s->iface->apply(s, &c);
    const int32_t id = selected_id(&c); /* before tmp, which may hold c's data, goes */
    free(tmp);
    return id;
}

bool mnv__sampler_uses_cands(const mnv_sampler *s) {
    if (!s || s->iface != &chain_iface || ((chain_ctx *)s->ctx)->broken) return false;
    const chain_ctx *ch = s->ctx;
    for (int i = 0; i < ch->n; i++) {
        int k = mnv__sampler_cands_kind(ch->stages[i]);
        if (k) return k > 0;
    }
    return false;
}

int32_t mnv__sampler_sample_cands(mnv_sampler *s, const float *cands, int32_t n_vocab) {
    if (!s || !cands || n_vocab <= 0) {
        mnv_set_error(MNV_ERR_INVALID_ARG, "sampler: sample needs a sampler, candidates and n_vocab > 0 (got %d)",
                      n_vocab);
        return -1;
    }
    if (!mnv__sampler_uses_cands(s)) return -2;
    chain_ctx *ch = s->ctx;
    const int32_t K = MNV_TOP_CANDS, n = n_vocab < K ? n_vocab : K;
    if (!chain_reserve(ch, (size_t)n)) {
        mnv_set_error(MNV_ERR_NOMEM, "sampler: out of memory for %d candidates", n);
        return -1;
    }
    mnv_token_cand *buf = ch->buf;
    double present = 0.0;
    for (int32_t i = 0; i < n; i++) {
        const float id = cands[K + i];
        if (!(id >= 0.0f && id < (float)n_vocab)) {
            mnv_set_error(MNV_ERR_INTERNAL, "sampler: candidate %d has id %g of a vocabulary of %d", i, (double)id,
                          n_vocab);
            return -1;
        }
        buf[i] = (mnv_token_cand){(int32_t)id, cands[i], 0.0f};
        present += cands[0] == -INFINITY ? 1.0 : exp((double)cands[i] - (double)cands[0]);
    }
    const double tail = exp((double)cands[2 * K]) - present;
    mnv_cand_array c = {.data = buf, .size = (size_t)n, .sorted = 1, .selected = -1, .partial = n_vocab > K,
                        .bound = cands[n - 1], .tail = tail > 0.0 ? tail : 0.0};
    s->iface->apply(s, &c);
    return c.incomplete ? -2 : selected_id(&c);
}
