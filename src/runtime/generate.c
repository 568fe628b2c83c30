/* The generate loop: prompt, then sample / evaluate one token at a time,
 * streaming complete UTF-8 text and holding back text that may begin a stop
 * string. */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#include "runtime/gen.h"
#include "runtime/sampler.h"
#include "runtime/session.h"

mnv_generate_params mnv_generate_params_default(void) {
    mnv_generate_params p;
    memset(&p, 0, sizeof p);
    p.size = sizeof p;
    p.max_tokens = 256;
    p.sampler = mnv_sampler_params_default();
    return p;
}

static bool pending_put(mnv__pending_text *p, const char *s, size_t n) {
    if (p->len + n + 1 > p->cap) {
        size_t cap = MNV_MAX(p->cap * 2, p->len + n + 64);
        char *t = realloc(p->text, cap);
        if (!t) return false;
        p->text = t;
        p->cap = cap;
    }
    memcpy(p->text + p->len, s, n);
    p->len += n;
    p->text[p->len] = 0;
    return true;
}

/* Where a stop string starts in the pending text (or -1), and how many
 * trailing bytes could still be the start of one. */
static long find_stop(const mnv_generate_params *gp, const mnv__pending_text *p, size_t *hold) {
    long first = -1;
    *hold = 0;
    for (size_t i = 0; i < gp->n_stop; i++) {
        const char *st = gp->stop_strings[i];
        size_t sl = st ? strlen(st) : 0;
        if (!sl) continue;
        char *hit = p->len >= sl ? memmem(p->text, p->len, st, sl) : NULL;
        if (hit && (first < 0 || hit - p->text < first)) first = hit - p->text;
        for (size_t k = MNV_MIN(sl - 1, p->len); k > *hold; k--)
            if (memcmp(p->text + p->len - k, st, k) == 0) {
                *hold = k;
                break;
            }
    }
    return first;
}

static bool is_eos(const mnv_model *m, const mnv_generate_params *gp, int32_t tok) {
    if (!gp->ignore_eos)
        for (int32_t i = 0; i < m->cfg.n_eos; i++)
            if (tok == m->cfg.eos_token_ids[i]) return true;
    for (size_t i = 0; i < gp->n_eos; i++)
        if (tok == gp->eos_ids[i]) return true;
    return false;
}

/* Decode tok, deliver what can be delivered; sets *stop when done. With
 * final (EOS, or the last token generation will make) everything held back
 * is delivered: a possible stop-string prefix, an incomplete UTF-8 tail. */
static mnv_status push_token(mnv__gen *g, int32_t tok, bool keep);

static mnv_status deliver(mnv__gen *g, int32_t tok, bool eos, bool final, bool *stop) {
    char piece[256];
    size_t n = 0;
    if (!eos) {
        mnv_status st = push_token(g, tok, true);
        if (st != MNV_OK) return st;
    }
    if (final && g->ds && mnv_detok_stream_flush(g->ds, piece, sizeof piece, &n) == MNV_OK &&
        !pending_put(&g->pend, piece, n))
        return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    size_t hold = 0;
    long at = find_stop(g->gp, &g->pend, &hold);
    size_t give = at >= 0 ? (size_t)at : g->pend.len - hold;
    if (at < 0 && final) give = g->pend.len; /* nothing more will come */
    int cb = 0;
    /* without a tokenizer nothing was ever decoded: pend.text is still NULL */
    if (g->gp->on_token) cb = g->gp->on_token(g->gp->user_data, tok, g->pend.text ? g->pend.text : "", give);
    if (give) memmove(g->pend.text, g->pend.text + give, g->pend.len - give);
    g->pend.len -= give;
    if (at >= 0) {
        g->res->stop_reason = MNV_STOP_STRING;
        *stop = true;
    } else if (cb) {
        g->res->stop_reason = MNV_STOP_CALLBACK;
        *stop = true;
    }
    return MNV_OK;
}

/* A max-heap would do; n_top <= 20, so insertion into a sorted list is enough. */
void mnv__logprobs(const float *logits, int32_t n, int32_t tok, int32_t n_top, int32_t *top_ids, float *top_lp,
                   float *tok_lp) {
    float mx = -INFINITY;
    for (int32_t i = 0; i < n; i++)
        if (logits[i] > mx) mx = logits[i];
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++) sum += exp((double)logits[i] - mx);
    const float lse = mx + (float)log(sum);
    int32_t k = 0;
    for (int32_t i = 0; i < n && n_top > 0; i++) {
        float l = logits[i];
        if (k == n_top && !(l > top_lp[k - 1])) continue; /* ties keep the lower id */
        int32_t j = k < n_top ? k++ : k - 1;
        while (j > 0 && l > top_lp[j - 1]) {
            top_lp[j] = top_lp[j - 1], top_ids[j] = top_ids[j - 1];
            j--;
        }
        top_lp[j] = l, top_ids[j] = i;
    }
    for (int32_t j = 0; j < k; j++) top_lp[j] -= lse;
    *tok_lp = logits[tok] - lse;
}

static void report_logprobs(mnv__gen *g, const float *logits, int32_t tok) {
    int32_t ids[MNV_MAX_TOP_LOGPROBS];
    float lps[MNV_MAX_TOP_LOGPROBS], lp;
    int32_t n_top = MNV_MIN(MNV_MAX(g->gp->n_top_logprobs, 0), MNV_MAX_TOP_LOGPROBS);
    n_top = MNV_MIN(n_top, g->model->cfg.vocab_size);
    mnv__logprobs(logits, g->model->cfg.vocab_size, tok, n_top, ids, lps, &lp);
    mnv_token_logprobs r = {tok, lp, n_top, ids, lps};
    g->gp->on_logprobs(g->gp->user_data, &r);
}

bool mnv__gen_wants_logits(const mnv__gen *g) {
    return g->biased || g->gp->on_logprobs || !mnv__sampler_greedy_only(g->smp);
}

bool mnv__gen_wants_cands(const mnv__gen *g) {
    return !g->biased && !g->gp->on_logprobs && mnv__sampler_uses_cands(g->smp);
}

mnv_status mnv__gen_step(mnv__gen *g, const mnv__gen_row *row, bool ctx_full, int32_t *tok_out, bool *done,
                         bool *need_logits) {
    *done = false;
    if (need_logits) *need_logits = false;
    const float *logits = row->logits;
    const int32_t V = g->model->cfg.vocab_size;
    const bool scripted = (size_t)g->res->n_generated < g->gp->n_scripted;
    int32_t tok = -1;
    if (scripted) {
        tok = g->gp->scripted_ids[g->res->n_generated];
    } else if (!logits && mnv__gen_wants_logits(g)) {
        if (!row->cands || !need_logits || !mnv__gen_wants_cands(g))
            return mnv_set_error(MNV_ERR_INTERNAL, "generate: this step's sampler needs the row of logits");
        tok = mnv__sampler_sample_cands(g->smp, row->cands, V);
        if (tok == -2) {
            *need_logits = true;
            return MNV_OK;
        }
        if (tok < 0) return MNV_ERR_INVALID_ARG; /* the sampler set the message */
    } else if (!logits) {
        if (row->argmax < 0 || row->argmax >= V)
            return mnv_set_error(MNV_ERR_INTERNAL, "generate: a step without logits needs a greedy sampler and an id");
        tok = row->argmax;
    }
    if (logits && g->biased) {
        memcpy(g->biased, logits, (size_t)g->model->cfg.vocab_size * sizeof(float));
        for (size_t i = 0; i < g->gp->n_logit_bias; i++) g->biased[g->gp->logit_bias[i].token] += g->gp->logit_bias[i].bias;
        logits = g->biased;
    }
    if (!scripted && logits) tok = mnv_sampler_sample(g->smp, logits, V);
    if (tok < 0) return MNV_ERR_INVALID_ARG; /* the sampler set the message */
    if (g->gp->on_logprobs && !logits)
        return mnv_set_error(MNV_ERR_INTERNAL, "generate: log-probabilities need the row of logits");
    *tok_out = tok;
    if (g->gp->on_logprobs) report_logprobs(g, logits, tok);
    mnv_sampler_accept(g->smp, tok);
    g->res->n_generated++;
    bool eos = is_eos(g->model, g->gp, tok), stop = false, last = g->res->n_generated >= g->gp->max_tokens;
    mnv_status st = deliver(g, tok, eos, eos || last || ctx_full, &stop);
    if (st != MNV_OK) return st;
    if (eos)
        g->res->stop_reason = MNV_STOP_EOS;
    else if (stop)
        ; /* deliver set the reason */
    else if (last)
        g->res->stop_reason = MNV_STOP_MAX_TOKENS; /* the last token needs no evaluation */
    else if (ctx_full)
        g->res->stop_reason = MNV_STOP_CONTEXT_FULL;
    *done = g->res->stop_reason != MNV_STOP_NONE;
    return MNV_OK;
}

static mnv_status gen_loop(mnv__gen *g, mnv_session *s) {
    double t0 = mnv_time_sec();
    for (int32_t i = 0; i < g->gp->max_tokens; i++) {
        mnv_status cst = mnv__session_check_cancel(s, "mnv_generate");
        if (cst != MNV_OK) return cst;
        int32_t tok;
        bool done;
        const mnv__gen_row row = {s->last_logits, NULL, -1};
        mnv_status st = mnv__gen_step(g, &row, s->n_past >= s->params.n_ctx, &tok, &done, NULL);
        if (st != MNV_OK) return st;
        if (done) break;
        if ((st = mnv_session_eval(s, &tok, 1, NULL)) != MNV_OK) return st;
    }
    g->res->gen_seconds = mnv_time_sec() - t0;
    if (g->res->stop_reason == MNV_STOP_NONE) g->res->stop_reason = MNV_STOP_MAX_TOKENS;
    return MNV_OK;
}

/* Text of one token into the pending buffer: ids the tokenizer cannot decode
 * (beyond its vocabulary, or holes in it: models pad their output head) add
 * nothing; a token longer than the stack buffer is decoded into a heap one. */
static mnv_status push_token(mnv__gen *g, int32_t tok, bool keep) {
    char piece[256], *buf = piece;
    size_t n = 0, cap = sizeof piece;
    if (!g->ds || tok >= mnv_tokenizer_n_vocab(g->model->tok)) return MNV_OK;
    mnv_status st = mnv_detok_stream_push(g->ds, tok, buf, cap, &n);
    if (st == MNV_ERR_BUFFER_TOO_SMALL) { /* too long for the buffer: the stream kept its state */
        cap = n + 1;
        if (!(buf = malloc(cap))) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
        st = mnv_detok_stream_push(g->ds, tok, buf, cap, &n);
    }
    if (st == MNV_ERR_RANGE) st = MNV_OK, n = 0; /* an id with no token */
    if (st == MNV_OK && keep && !pending_put(&g->pend, buf, n)) st = mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    if (buf != piece) free(buf);
    return st;
}

mnv_status mnv__gen_begin(mnv__gen *g, const mnv_model *m, const mnv_generate_params *gp, const int32_t *prompt,
                          size_t n_prompt, mnv_generate_result *res) {
    memset(g, 0, sizeof *g);
    g->model = m;
    g->gp = gp;
    g->res = res;
    if (gp->n_logit_bias && !gp->logit_bias)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "generate: logit_bias is NULL with n_logit_bias %zu", gp->n_logit_bias);
    for (size_t i = 0; i < gp->n_logit_bias; i++) {
        if (gp->logit_bias[i].token < 0 || gp->logit_bias[i].token >= m->cfg.vocab_size)
            return mnv_set_error(MNV_ERR_RANGE, "generate: logit_bias token %d is outside the vocabulary (%d)",
                                 gp->logit_bias[i].token, m->cfg.vocab_size);
        if (!isfinite(gp->logit_bias[i].bias))
            return mnv_set_error(MNV_ERR_INVALID_ARG, "generate: logit_bias of token %d is not finite",
                                 gp->logit_bias[i].token);
    }
    if (gp->n_scripted && !gp->scripted_ids)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "generate: scripted_ids is NULL with n_scripted %zu", gp->n_scripted);
    for (size_t i = 0; i < gp->n_scripted; i++)
        if (gp->scripted_ids[i] < 0 || gp->scripted_ids[i] >= m->cfg.vocab_size)
            return mnv_set_error(MNV_ERR_RANGE, "generate: scripted id %d at %zu is outside the vocabulary (%d)",
                                 gp->scripted_ids[i], i, m->cfg.vocab_size);
    if (gp->n_top_logprobs < 0 || gp->n_top_logprobs > MNV_MAX_TOP_LOGPROBS)
        return mnv_set_error(MNV_ERR_RANGE, "generate: n_top_logprobs %d is outside [0, %d]", gp->n_top_logprobs,
                             MNV_MAX_TOP_LOGPROBS);
    if (gp->n_logit_bias && gp->max_tokens > 0 && !(g->biased = malloc((size_t)m->cfg.vocab_size * sizeof(float))))
        return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    mnv_status st = gp->max_tokens > 0 ? mnv_sampler_chain_create(&gp->sampler, m->cfg.vocab_size, &g->smp) : MNV_OK;
    if (st == MNV_OK && gp->max_tokens > 0 && m->tok) st = mnv_detok_stream_create(m->tok, &g->ds);
    /* the decoder continues the prompt's text (e.g. no stripped leading space
     * after a prompt); the prompt's own text is not delivered. Penalties see
     * the prompt too. */
    for (size_t i = 0; st == MNV_OK && g->smp && i < n_prompt; i++) {
        if (prompt[i] != m->cfg.bos_token_id) st = push_token(g, prompt[i], false);
        mnv_sampler_accept(g->smp, prompt[i]);
    }
    if (st != MNV_OK) mnv__gen_end(g);
    return st;
}

void mnv__gen_end(mnv__gen *g) {
    mnv_sampler_free(g->smp);
    mnv_detok_stream_free(g->ds);
    free(g->pend.text);
    free(g->biased);
    g->smp = NULL, g->ds = NULL, g->pend.text = NULL, g->biased = NULL;
}

mnv_status mnv__gen_params(const mnv_generate_params *params, mnv_generate_params *out, const char *who) {
    *out = mnv_generate_params_default();
    if (!params) return MNV_OK;
    /* a caller built against an older, smaller struct: the rest keeps its defaults */
    if (params->size < offsetof(mnv_generate_params, reserved) || params->size > sizeof *out)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "%s: params->size %u is not a known size", who, params->size);
    memcpy(out, params, params->size);
    return MNV_OK;
}

mnv_status mnv_generate(mnv_session *s, const int32_t *prompt, size_t n_prompt, const mnv_generate_params *params,
                        mnv_generate_result *result) {
    mnv_generate_result local;
    mnv_generate_result *res = result ? result : &local;
    memset(res, 0, sizeof *res);
    if (!s || (!prompt && n_prompt)) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_generate: NULL argument");
    mnv_generate_params gp;
    mnv_status st = mnv__gen_params(params, &gp, "mnv_generate");
    if (st != MNV_OK) return st;
    if (n_prompt == 0 && !s->logits_valid)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_generate: empty prompt and no logits to continue from "
                                                  "(empty, reset or truncated context)");
    /* everything that can fail on the parameters fails before the prompt enters the context */
    mnv__gen g;
    if ((st = mnv__gen_begin(&g, s->model, &gp, prompt, n_prompt, res)) != MNV_OK) return st;
    double t0 = mnv_time_sec();
    st = mnv_session_eval(s, prompt, n_prompt, NULL);
    res->prompt_seconds = mnv_time_sec() - t0;
    res->n_prompt = (int32_t)n_prompt;
    if (st == MNV_OK && gp.max_tokens <= 0) res->stop_reason = MNV_STOP_MAX_TOKENS;
    if (st == MNV_OK && gp.max_tokens > 0) st = gen_loop(&g, s);
    mnv__gen_end(&g);
    return st;
}
