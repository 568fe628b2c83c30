/* The engine's requests and their scheduler: continuous batching with
 * chunked prefill over the KV block pool.
 *
 * Submission, cancellation and waiting take the engine's mutex (the inbox
 * and the registry of live requests); everything else (the waiting queue,
 * the running set, the pool, the graphs) belongs to the thread that runs
 * steps and takes no lock. One step:
 *   1. drain the inbox into the waiting queue; end the cancelled requests
 *      (their blocks go back to the pool);
 *   2. admit waiting requests in order while a sequence is free and the
 *      pool has room for their first chunk (the prefix cache serves what it
 *      holds of their prompt);
 *   3. one ragged batch: one token for every decoding request, then chunks
 *      of prompts up to step_tokens; when the pool is full, the most
 *      recently admitted request is preempted (its blocks freed, back to the
 *      front of the queue with its tokens so far as its prompt);
 *   4. run it; sample each request that reached its last token from its own
 *      logits row; stream text; end the finished ones. */
#include <stdio.h>
#include <stdlib.h>

#include "core/topcands.h"
#include "runtime/engine_int.h"

struct mnv__request {
    uint64_t id;
    mnv__request *next;        /* inbox or waiting queue */
    mnv_generate_params gp;    /* stop strings and EOS ids point at owned copies */
    char **stops;
    int32_t *eos;
    mnv_logit_bias *bias;
    int32_t *scripted;
    mnv_request_done_callback on_done;
    int32_t detached;
    int32_t *tokens;           /* prompt, then every sampled token */
    int32_t n_prompt, n_tokens, cap;
    int32_t seq;               /* pool sequence, -1 while waiting */
    int32_t chunk_cap;         /* prompt tokens a step may take (lowered when the pool is tight) */
    int32_t n_eval;            /* tokens whose K/V the sequence holds */
    bool admitted;             /* at least once */
    mnv__gen gen;
    mnv_request_result res;
    mnv_status status;
    char err[256];
    bool cancel, done;         /* under the engine's mutex */
    double t_submit, t_admit, t_first;
};

mnv_request_params mnv_request_params_default(void) {
    mnv_request_params p;
    memset(&p, 0, sizeof p);
    p.size = sizeof p;
    p.gen = mnv_generate_params_default();
    return p;
}

static void request_free(mnv__request *r) {
    if (!r) return;
    mnv__gen_end(&r->gen);
    for (size_t i = 0; r->stops && i < r->gp.n_stop; i++) free(r->stops[i]);
    free(r->stops);
    free(r->eos);
    free(r->bias);
    free(r->scripted);
    free(r->tokens);
    free(r);
}

/* ---- registry (under mu) -------------------------------------------------------------- */

static int32_t reg_find(mnv_engine *e, uint64_t id) {
    for (int32_t i = 0; i < e->n_reg; i++)
        if (e->reg[i]->id == id) return i;
    return -1;
}

static void reg_remove(mnv_engine *e, int32_t i) { e->reg[i] = e->reg[--e->n_reg]; }

static void publish(mnv_engine *e) {
    mnv_kv_pool_stats ps;
    mnv_kv_pool_stats_get(e->pool, &ps);
    pthread_mutex_lock(&e->mu);
    e->snap = e->stats;
    e->snap.n_running = e->n_running;
    e->snap.n_waiting = e->n_waiting;
    e->snap.prefix_hit_tokens = (uint64_t)ps.prefix_hit_tokens;
    e->snap.kv_bytes_total = ps.bytes_total;
    e->snap.kv_bytes_used = ps.bytes_used;
    e->snap.kv_bytes_cached = ps.bytes_cached;
    e->snap.kv_bytes_free = ps.bytes_free;
    e->snap.kv_bytes_peak = (uint64_t)ps.blocks_peak_used * ps.block_bytes;
    e->snap.kv_blocks_total = ps.blocks_total;
    e->snap.kv_blocks_used = ps.blocks_used;
    e->snap.kv_blocks_cached = ps.blocks_cached;
    e->snap.kv_blocks_free = ps.blocks_free;
    e->snap.kv_block_tokens = e->p.kv_block_tokens;
    pthread_mutex_unlock(&e->mu);
}

void mnv_engine_get_stats(mnv_engine *e, mnv_engine_stats *out) {
    if (!out) return;
    memset(out, 0, sizeof *out);
    if (!e) return;
    pthread_mutex_lock(&e->mu);
    *out = e->snap;
    pthread_mutex_unlock(&e->mu);
}

/* ---- ending a request (step thread) ------------------------------------------------- */

static void running_remove(mnv_engine *e, mnv__request *r) {
    for (int32_t i = 0; i < e->n_running; i++)
        if (e->running[i] == r) {
            memmove(e->running + i, e->running + i + 1, (size_t)(e->n_running - i - 1) * sizeof *e->running);
            e->n_running--;
            return;
        }
}

static void waiting_remove(mnv_engine *e, mnv__request *r) {
    for (mnv__request **pp = &e->wait_head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            if (e->wait_tail == r) e->wait_tail = prev;
            r->next = NULL;
            e->n_waiting--;
            return;
        }
}

/* status MNV_OK: finished; else cancelled or failed (the thread's last
 * error is the message). The request leaves the queue or the running set,
 * its blocks go back to the pool, on_done runs, and a waiter wakes. */
static void finish(mnv_engine *e, mnv__request *r, mnv_status status) {
    if (r->seq >= 0) {
        running_remove(e, r);
        mnv_kv_pool_seq_free(e->pool, r->seq);
        r->seq = -1;
    } else {
        waiting_remove(e, r);
    }
    double now = mnv_time_sec();
    r->status = status;
    if (status != MNV_OK) snprintf(r->err, sizeof r->err, "%s", mnv_last_error());
    if (r->t_first > 0) r->res.gen.gen_seconds = now - r->t_first;
    if (r->admitted) r->res.queue_seconds = r->t_admit - r->t_submit;
    mnv__gen_end(&r->gen);
    if (r->on_done) r->on_done(r->gp.user_data, r->id, status, &r->res);
    const bool detached = r->detached; /* once done is set, a waiter may free r */
    pthread_mutex_lock(&e->mu);
    r->done = true;
    if (detached) {
        int32_t i = reg_find(e, r->id);
        if (i >= 0) reg_remove(e, i);
    }
    pthread_cond_broadcast(&e->cv_done);
    pthread_mutex_unlock(&e->mu);
    if (detached) request_free(r);
}

static void fail(mnv_engine *e, mnv__request *r, mnv_status st, const char *fmt, int64_t a, int64_t b) {
    char msg[200];
    snprintf(msg, sizeof msg, fmt, (long long)a, (long long)b);
    mnv_set_error(st, "request %llu: %s", (unsigned long long)r->id, msg);
    finish(e, r, st);
}

/* ---- submission ---------------------------------------------------------------------- */

static mnv_status copy_gen(mnv__request *r, const mnv_generate_params *in) {
    mnv_status st = mnv__gen_params(in, &r->gp, "mnv_engine_submit");
    if (st != MNV_OK) return st;
    if (r->gp.n_stop) {
        if (!r->gp.stop_strings) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_engine_submit: stop_strings is NULL");
        if (!(r->stops = calloc(r->gp.n_stop, sizeof(char *)))) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
        for (size_t i = 0; i < r->gp.n_stop; i++)
            if (r->gp.stop_strings[i] && !(r->stops[i] = strdup(r->gp.stop_strings[i])))
                return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
        r->gp.stop_strings = (const char *const *)r->stops;
    }
    if (r->gp.n_eos) {
        if (!r->gp.eos_ids) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_engine_submit: eos_ids is NULL");
        if (!(r->eos = malloc(r->gp.n_eos * sizeof(int32_t)))) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
        memcpy(r->eos, r->gp.eos_ids, r->gp.n_eos * sizeof(int32_t));
        r->gp.eos_ids = r->eos;
    }
    if (r->gp.n_logit_bias) {
        if (!r->gp.logit_bias) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_engine_submit: logit_bias is NULL");
        if (!(r->bias = malloc(r->gp.n_logit_bias * sizeof *r->bias)))
            return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
        memcpy(r->bias, r->gp.logit_bias, r->gp.n_logit_bias * sizeof *r->bias);
        r->gp.logit_bias = r->bias;
    }
    if (r->gp.n_scripted) {
        if (!r->gp.scripted_ids) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_engine_submit: scripted_ids is NULL");
        if (!(r->scripted = malloc(r->gp.n_scripted * sizeof(int32_t))))
            return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
        memcpy(r->scripted, r->gp.scripted_ids, r->gp.n_scripted * sizeof(int32_t));
        r->gp.scripted_ids = r->scripted;
    }
    return MNV_OK;
}

static mnv_status check_prompt(const mnv_engine *e, const mnv_request_params *p) {
    if (!p->prompt || p->n_prompt < 1)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_engine_submit: a request needs a prompt of at least one token");
    if (p->n_prompt > (size_t)e->p.max_seq_tokens)
        return mnv_set_error(MNV_ERR_RANGE, "mnv_engine_submit: a prompt of %zu tokens exceeds the context of %d",
                             p->n_prompt, e->p.max_seq_tokens);
    /* the blocks its prompt needs at least: every block in full layer groups,
     * in sliding ones the window's ring (prompt chunks shrink to fit) */
    int64_t B = e->p.kv_block_tokens, n = (int64_t)p->n_prompt, blocks = 0;
    for (int32_t g = 0; g < e->n_groups; g++) {
        int64_t full = (n + B - 1) / B, w = e->window[g];
        blocks += w > 0 ? MNV_MIN(full, (w + B - 1) / B + 1) : full; /* chunks of one token at worst */
    }
    if (blocks > e->kv.n_blocks)
        return mnv_set_error(MNV_ERR_RANGE,
                             "mnv_engine_submit: a prompt of %zu tokens needs %lld KV blocks, the pool has %lld",
                             p->n_prompt, (long long)blocks, (long long)e->kv.n_blocks);
    for (size_t i = 0; i < p->n_prompt; i++)
        if (p->prompt[i] < 0 || p->prompt[i] >= e->model->cfg.vocab_size)
            return mnv_set_error(MNV_ERR_RANGE, "mnv_engine_submit: token id %d at prompt position %zu is outside "
                                 "the vocabulary (%d)", p->prompt[i], i, e->model->cfg.vocab_size);
    return MNV_OK;
}

mnv_status mnv_engine_load_weights(mnv_engine *e, mnv_progress_callback progress, void *user_data) {
    if (!e) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_engine_load_weights: engine is NULL");
    pthread_mutex_lock(&e->mu);
    const uint64_t submitted = e->next_id; /* after a submit the step thread may be using the device */
    pthread_mutex_unlock(&e->mu);
    if (submitted)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_engine_load_weights: %llu requests were submitted already",
                             (unsigned long long)submitted);
    return mnv__engine_place_weights(e, progress, user_data);
}

mnv_status mnv_engine_submit(mnv_engine *e, const mnv_request_params *params, uint64_t *id_out) {
    if (id_out) *id_out = 0;
    if (!e || !params || !id_out) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_engine_submit: NULL argument");
    mnv_request_params p = mnv_request_params_default();
    if (params->size < offsetof(mnv_request_params, reserved) || params->size > sizeof p)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_engine_submit: params->size %u is not a known size",
                             params->size);
    memcpy(&p, params, params->size);
    mnv_status st = check_prompt(e, &p);
    if (st != MNV_OK) return st;
    mnv__request *r = calloc(1, sizeof *r);
    if (!r) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    r->seq = -1;
    r->chunk_cap = INT32_MAX;
    r->on_done = p.on_done;
    r->detached = p.detached;
    r->n_prompt = r->n_tokens = (int32_t)p.n_prompt;
    r->cap = r->n_prompt + 16;
    r->tokens = malloc((size_t)r->cap * sizeof(int32_t));
    st = r->tokens ? copy_gen(r, &p.gen) : mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    if (st == MNV_OK) {
        memcpy(r->tokens, p.prompt, p.n_prompt * sizeof(int32_t));
        r->res.gen.n_prompt = r->n_prompt;
        /* the sampler's parameters fail here, at submission, not later */
        st = mnv__gen_begin(&r->gen, e->model, &r->gp, r->tokens, p.n_prompt, &r->res.gen);
    }
    if (st != MNV_OK) {
        request_free(r);
        return st;
    }
    r->t_submit = mnv_time_sec();
    pthread_mutex_lock(&e->mu);
    if (e->n_reg == e->cap_reg) {
        int32_t cap = e->cap_reg ? 2 * e->cap_reg : 64;
        mnv__request **reg = realloc(e->reg, (size_t)cap * sizeof *reg);
        if (!reg) {
            pthread_mutex_unlock(&e->mu);
            request_free(r);
            return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
        }
        e->reg = reg;
        e->cap_reg = cap;
    }
    uint64_t id = r->id = ++e->next_id; /* r is the engine's once unlocked (a detached one may be freed) */
    e->reg[e->n_reg++] = r;
    if (e->inbox_tail)
        e->inbox_tail->next = r;
    else
        e->inbox = r;
    e->inbox_tail = r;
    pthread_cond_signal(&e->cv_work);
    pthread_mutex_unlock(&e->mu);
    *id_out = id;
    return MNV_OK;
}

mnv_status mnv_engine_cancel(mnv_engine *e, uint64_t id) {
    if (!e) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_engine_cancel: NULL engine");
    pthread_mutex_lock(&e->mu);
    int32_t i = reg_find(e, id);
    bool ok = i >= 0 && !e->reg[i]->done;
    if (ok && !e->reg[i]->cancel) {
        e->reg[i]->cancel = true;
        e->n_cancel_pending++;
        pthread_cond_signal(&e->cv_work);
    }
    pthread_mutex_unlock(&e->mu);
    return ok ? MNV_OK
              : mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_engine_cancel: no running or waiting request %llu",
                              (unsigned long long)id);
}

mnv_status mnv_engine_wait(mnv_engine *e, uint64_t id, mnv_request_result *result) {
    if (result) memset(result, 0, sizeof *result);
    if (!e) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_engine_wait: NULL engine");
    pthread_mutex_lock(&e->mu);
    int32_t i = reg_find(e, id);
    if (i < 0 || e->reg[i]->detached) {
        pthread_mutex_unlock(&e->mu);
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_engine_wait: no request %llu to wait for (unknown, "
                             "detached or already collected)", (unsigned long long)id);
    }
    mnv__request *r = e->reg[i];
    while (!r->done) pthread_cond_wait(&e->cv_done, &e->mu);
    reg_remove(e, reg_find(e, id));
    pthread_mutex_unlock(&e->mu);
    if (result) *result = r->res;
    mnv_status st = r->status;
    if (st != MNV_OK) mnv_set_error(st, "%s", r->err);
    request_free(r);
    return st;
}

/* ---- one step ---------------------------------------------------------------------- */

static void drain_inbox(mnv_engine *e) {
    pthread_mutex_lock(&e->mu);
    mnv__request *in = e->inbox;
    e->inbox = e->inbox_tail = NULL;
    bool cancels = e->n_cancel_pending > 0;
    e->n_cancel_pending = 0;
    pthread_mutex_unlock(&e->mu);
    for (mnv__request *r = in, *next; r; r = next) {
        next = r->next;
        r->next = NULL;
        if (e->wait_tail)
            e->wait_tail->next = r;
        else
            e->wait_head = r;
        e->wait_tail = r;
        e->n_waiting++;
    }
    if (!cancels) return;
    /* cancel flags are written under the mutex: read them there, act outside */
    mnv__request *victims[64];
    for (bool more = true; more;) {
        int32_t n = 0;
        more = false;
        pthread_mutex_lock(&e->mu);
        for (int32_t i = 0; i < e->n_running && n < 64; i++)
            if (e->running[i]->cancel) victims[n++] = e->running[i];
        for (mnv__request *r = e->wait_head; r && n < 64; r = r->next)
            if (r->cancel) victims[n++] = r;
        pthread_mutex_unlock(&e->mu);
        more = n == 64;
        for (int32_t i = 0; i < n; i++)
            fail(e, victims[i], MNV_ERR_CANCELLED, "cancelled with %lld of %lld tokens evaluated",
                 victims[i]->n_eval, victims[i]->n_tokens);
    }
}

static void admit(mnv_engine *e) {
    while (e->wait_head && e->n_running < e->p.max_seqs) {
        mnv__request *r = e->wait_head;
        int32_t seq;
        int64_t cached;
        mnv_status st = mnv_kv_pool_seq_start(e->pool, r->tokens, r->n_tokens, &seq, &cached);
        if (st == MNV_ERR_NOMEM) return; /* no sequence free: wait for one */
        if (st != MNV_OK) {
            finish(e, r, st);
            continue;
        }
        /* beside running requests, a request is admitted only with room for
         * all of its prompt and its first generated token, so that requests
         * do not take turns preempting each other in a tight pool; alone, it
         * needs room for its first block */
        int64_t left = r->n_tokens - cached, first = MNV_MIN(left, (int64_t)e->p.kv_block_tokens);
        int64_t need = mnv_kv_pool_blocks_needed(e->pool, seq, e->n_running > 0 ? left + 1 : first);
        if (need > mnv_kv_pool_blocks_available(e->pool)) {
            mnv_kv_pool_seq_free(e->pool, seq);
            if (e->n_running > 0) return; /* room comes back as running requests end */
            fail(e, r, MNV_ERR_NOMEM, "the KV pool cannot hold %lld more tokens of it (%lld blocks in all)",
                 first, e->kv.n_blocks);
            continue;
        }
        e->wait_head = r->next;
        if (!e->wait_head) e->wait_tail = NULL;
        r->next = NULL;
        e->n_waiting--;
        r->seq = seq;
        r->n_eval = (int32_t)cached;
        if (!r->admitted) {
            r->admitted = true;
            r->t_admit = mnv_time_sec();
            r->res.n_cached = (int32_t)cached;
        }
        e->running[e->n_running++] = r;
    }
}

/* Back to the front of the queue: its blocks are freed (the full ones stay
 * cached for its return), its tokens so far become its prompt. */
static void preempt(mnv_engine *e, mnv__request *r) {
    e->stats.preemptions++;
    running_remove(e, r);
    mnv_kv_pool_seq_free(e->pool, r->seq);
    r->seq = -1;
    r->n_eval = 0;
    r->next = e->wait_head;
    e->wait_head = r;
    if (!e->wait_tail) e->wait_tail = r;
    e->n_waiting++;
}

/* The step's parts: decodes first, then prompt chunks in admission order. */
static int32_t build_parts(mnv_engine *e) {
    int32_t n = 0, budget = e->p.step_tokens;
    for (int pass = 0; pass < 2; pass++)
        for (int32_t i = 0; i < e->n_running && budget > 0; i++) {
            mnv__request *r = e->running[i];
            int32_t left = r->n_tokens - r->n_eval;
            if ((pass == 0) != (left == 1)) continue;
            int32_t k = MNV_MIN(MNV_MIN(left, budget), r->chunk_cap);
            e->parts[n] = (mnv__step_part){r->seq, r->tokens + r->n_eval, k, k == left ? k - 1 : k};
            e->part_req[n++] = r;
            budget -= k;
        }
    return n;
}

/* Parts whose room the pool has; preempts the most recently admitted
 * request while one does not fit. Returns the part count (0: nothing). */
static int32_t make_room(mnv_engine *e) {
    for (;;) {
        int32_t n = build_parts(e), bad = -1;
        for (int32_t i = 0; i < n && bad < 0; i++) {
            mnv_status st = mnv_kv_pool_prepare_append(e->pool, e->parts[i].seq, e->parts[i].n);
            if (st == MNV_ERR_NOMEM)
                bad = i;
            else if (st != MNV_OK) {
                finish(e, e->part_req[i], st);
                bad = -2;
                break;
            }
        }
        if (bad == -1) return n;
        if (bad == -2) continue;
        /* a prompt chunk that does not fit first gets smaller (a sliding
         * window's ring grows with the chunk), down to one token */
        mnv__request *br = e->part_req[bad];
        if (e->parts[bad].n > 1) {
            br->chunk_cap = e->parts[bad].n / 2;
            continue;
        }
        if (e->n_running == 1) {
            mnv__request *r = e->running[0];
            fail(e, r, MNV_ERR_NOMEM, "the KV pool is full with %lld tokens of this request alone (%lld blocks)",
                 r->n_eval, e->kv.n_blocks);
            continue;
        }
        preempt(e, e->running[e->n_running - 1]);
    }
}

static bool grow_tokens(mnv__request *r) {
    if (r->n_tokens < r->cap) return true;
    int32_t cap = r->cap * 2;
    int32_t *t = realloc(r->tokens, (size_t)cap * sizeof(int32_t));
    if (!t) return false;
    r->tokens = t;
    r->cap = cap;
    return true;
}

/* After the pass: the tokens are in the cache; pick each wanted row's token
 * from what came back (rows of logits, candidates or argmax). A row whose
 * candidates could not decide is brought back alone. */
static void after_run(mnv_engine *e, int32_t n, bool with_logits, bool with_cands) {
    int32_t V = e->model->cfg.vocab_size, row = 0;
    double now = mnv_time_sec();
    for (int32_t i = 0; i < n; i++) {
        mnv__request *r = e->part_req[i];
        const mnv__step_part *pt = &e->parts[i];
        r->n_eval += pt->n;
        if (r->res.gen.n_generated > 0 && pt->n == 1)
            e->stats.tokens_decoded++;
        else
            e->stats.tokens_prefilled += (uint64_t)pt->n;
        if (pt->out_from == pt->n) continue;
        float *lg = e->out_logits + (size_t)row * (size_t)V;
        mnv__gen_row out = {with_logits ? lg : NULL, with_cands ? e->out_cands + (size_t)row * MNV_TOP_CANDS_ROW : NULL,
                            e->out_argmax[row]};
        const int32_t at = row++;
        if (r->gp.max_tokens <= 0) {
            r->res.gen.stop_reason = MNV_STOP_MAX_TOKENS;
            finish(e, r, MNV_OK);
            continue;
        }
        int32_t tok;
        bool done;
        bool need = false, full = r->n_tokens >= e->p.max_seq_tokens;
        /* a token the sampler draws (not greedy's argmax, not a scripted one) */
        const bool sampled = !mnv__sampler_greedy_only(r->gen.smp) && (size_t)r->res.gen.n_generated >= r->gp.n_scripted;
        mnv_status st = mnv__gen_step(&r->gen, &out, full, &tok, &done, &need);
        if (st == MNV_OK && need) {
            out.logits = lg;
            st = mnv__engine_read_logits(e, at, lg);
            if (st == MNV_OK) st = mnv__gen_step(&r->gen, &out, full, &tok, &done, NULL);
        }
        if (st == MNV_OK && sampled) {
            if (out.logits)
                e->stats.sampled_from_rows++;
            else if (out.cands)
                e->stats.sampled_from_cands++;
        }
        if (r->res.gen.n_generated == 1 && r->t_first == 0) {
            r->t_first = now;
            r->res.first_token_seconds = now - r->t_submit;
            r->res.gen.prompt_seconds = now - r->t_admit;
        }
        if (st == MNV_OK && !done && !grow_tokens(r)) st = mnv_set_error(MNV_ERR_NOMEM, "out of memory");
        if (st != MNV_OK || done) {
            finish(e, r, st);
            continue;
        }
        r->tokens[r->n_tokens++] = tok;
    }
}

static mnv_status do_step(mnv_engine *e) {
    drain_inbox(e);
    admit(e);
    int32_t n = make_room(e);
    mnv_status st = MNV_OK;
    if (n > 0) {
        /* rows of logits come back only for requests that sample from them;
         * greedy ones take the argmax computed beside them */
        bool with_logits = false, with_cands = false;
        for (int32_t i = 0; i < n && !with_logits; i++) {
            const mnv__gen *gen = &e->part_req[i]->gen;
            if (e->parts[i].out_from == e->parts[i].n || !mnv__gen_wants_logits(gen)) continue;
            if (mnv__gen_wants_cands(gen) && e->p.host_sampling <= 0 &&
                (e->p.host_sampling < 0 || !mnv_backend_host_memory(e->be)))
                with_cands = true;
            else
                with_logits = true;
        }
        with_cands &= !with_logits; /* every row comes back anyway */
        st = mnv__engine_run(e, e->parts, n, with_logits ? e->out_logits : NULL, e->out_argmax,
                             with_cands ? e->out_cands : NULL);
        e->stats.steps++;
        if (st == MNV_OK) {
            after_run(e, n, with_logits, with_cands);
        } else { /* the pass itself failed: every request in it fails with its error */
            char msg[256];
            snprintf(msg, sizeof msg, "%s", mnv_last_error());
            for (int32_t i = 0; i < n; i++) {
                mnv_set_error(st, "%s", msg);
                finish(e, e->part_req[i], st);
            }
        }
    }
    publish(e);
    return st;
}

mnv_status mnv_engine_step(mnv_engine *e, int32_t *n_active_out) {
    if (n_active_out) *n_active_out = 0;
    if (!e) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_engine_step: NULL engine");
    if (e->p.run_thread) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_engine_step: the engine runs its own steps");
    mnv_status st = do_step(e);
    if (n_active_out) {
        pthread_mutex_lock(&e->mu);
        *n_active_out = e->n_running + e->n_waiting + (e->inbox != NULL);
        pthread_mutex_unlock(&e->mu);
    }
    return st == MNV_ERR_CANCELLED ? MNV_OK : st;
}

static void *step_thread(void *arg) {
    mnv_engine *e = arg;
    while (!atomic_load(&e->stop)) {
        pthread_mutex_lock(&e->mu);
        while (!atomic_load(&e->stop) && !e->inbox && !e->n_cancel_pending && !e->n_running && !e->n_waiting)
            pthread_cond_wait(&e->cv_work, &e->mu);
        pthread_mutex_unlock(&e->mu);
        if (atomic_load(&e->stop)) break;
        do_step(e); /* a failed pass has failed its requests; the engine goes on */
    }
    return NULL;
}

/* ---- lifecycle ---------------------------------------------------------------------- */

mnv_status mnv_engine_create(mnv_model *model, const mnv_engine_params *params, mnv_engine **out) {
    if (out) *out = NULL; /* also on failure */
    mnv_engine *e = NULL;
    mnv_status st = mnv__engine_create(model, params, &e);
    if (st != MNV_OK) return st;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv_work, NULL);
    pthread_cond_init(&e->cv_done, NULL);
    e->sync_ready = true;
    e->be->abort = &e->abort;
    int32_t S = e->p.max_seqs;
    e->running = calloc((size_t)S, sizeof *e->running);
    e->parts = calloc((size_t)S, sizeof *e->parts);
    e->part_req = calloc((size_t)S, sizeof *e->part_req);
    e->out_logits = malloc((size_t)S * (size_t)model->cfg.vocab_size * sizeof(float));
    e->out_argmax = malloc((size_t)S * sizeof(int32_t));
    e->out_cands = malloc((size_t)S * MNV_TOP_CANDS_ROW * sizeof(float));
    if (!e->running || !e->parts || !e->part_req || !e->out_logits || !e->out_argmax || !e->out_cands)
        st = mnv_set_error(MNV_ERR_NOMEM, "engine: out of memory");
    if (st == MNV_OK) publish(e);
    if (st == MNV_OK && e->p.run_thread) {
        if (pthread_create(&e->thread, NULL, step_thread, e) != 0)
            st = mnv_set_error(MNV_ERR_INTERNAL, "engine: cannot start the step thread");
        else
            e->thread_started = true;
    }
    if (st != MNV_OK) {
        mnv_engine_free(e);
        return st;
    }
    *out = e;
    return MNV_OK;
}

void mnv_engine_free(mnv_engine *e) {
    if (!e) return;
    if (e->sync_ready) {
        atomic_store(&e->stop, 1);
        atomic_store(&e->abort, 1);
        pthread_mutex_lock(&e->mu);
        pthread_cond_broadcast(&e->cv_work);
        pthread_mutex_unlock(&e->mu);
        if (e->thread_started) pthread_join(e->thread, NULL);
        drain_inbox(e);
        while (e->n_running) fail(e, e->running[0], MNV_ERR_CANCELLED, "the engine was freed (%lld of %lld tokens)",
                                  e->running[0]->n_eval, e->running[0]->n_tokens);
        while (e->wait_head) fail(e, e->wait_head, MNV_ERR_CANCELLED, "the engine was freed (%lld of %lld tokens)",
                                  e->wait_head->n_eval, e->wait_head->n_tokens);
        for (int32_t i = 0; i < e->n_reg; i++) request_free(e->reg[i]);
        free(e->reg);
        pthread_cond_destroy(&e->cv_work);
        pthread_cond_destroy(&e->cv_done);
        pthread_mutex_destroy(&e->mu);
    }
    free(e->running);
    free(e->parts);
    free(e->part_req);
    free(e->out_logits);
    free(e->out_argmax);
    free(e->out_cands);
    mnv__engine_destroy(e);
}
