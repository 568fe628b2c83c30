#include "runtime/session.h"

#include <stddef.h>
#include <stdlib.h>

mnv_session_params mnv_session_params_default(void) {
    mnv_session_params p;
    memset(&p, 0, sizeof p);
    p.size = sizeof p;
    p.kv_dtype = MNV_DTYPE_F32;
    return p;
}

/* Tokens of KV a session's pool holds: every sequence at its full context in
 * the full-attention groups, and for each sliding-window group room for a
 * whole batch beside the window (the pool sizes a ring for the window alone;
 * the engine shrinks a prompt chunk that does not fit, a session evaluates
 * its batches whole, so a batch of n_batch tokens must always fit). */
static int64_t session_kv_tokens(const mnv_model_config *c, int32_t n_seq, int32_t n_ctx, int32_t n_batch) {
    enum { B = 16 };
    int64_t t = (int64_t)n_seq * ((n_ctx + B - 1) / B * B);
    int32_t L = c->num_hidden_layers, n_groups = 0, window[MNV_MAX_KV_GROUPS] = {0};
    int32_t *lg = calloc((size_t)MNV_MAX(L, 1) * 2, sizeof(int32_t));
    if (lg) mnv_model_kv_groups(c, &n_groups, window, lg, lg + L);
    free(lg);
    const int32_t k = MNV_MIN(n_batch, n_ctx);
    for (int32_t g = 0; g < n_groups; g++)
        if (window[g]) t += ((int64_t)(k + B - 1) / B + 1) * B;
    return t;
}

mnv_status mnv_session_create_multi(mnv_model *model, const mnv_session_params *params, int32_t n_seq,
                                    mnv_session **out) {
    if (!out) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_session_create: out is NULL");
    *out = NULL;
    if (!model) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_session_create: model is NULL");
    mnv_session *s = calloc(1, sizeof *s);
    if (!s) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    s->model = model;
    s->params = mnv_session_params_default();
    if (params) { /* a caller built against an older, smaller struct: the rest keeps its defaults */
        if (params->size < offsetof(mnv_session_params, kv_dtype) || params->size > sizeof s->params) {
            free(s);
            return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_session_create: params->size %u is not a known size",
                                 params->size);
        }
        memcpy(&s->params, params, params->size);
    }
    int32_t train = model->cfg.max_position_embeddings > 0 ? model->cfg.max_position_embeddings : 4096;
    if (s->params.n_ctx <= 0) s->params.n_ctx = MNV_MIN(train, 4096);
    if (s->params.n_batch <= 0) s->params.n_batch = 512;
    if (s->params.n_threads <= 0) s->params.n_threads = model->params.n_threads;
    /* params.n_threads keeps the request; the backend clamps it to the CPUs */
    mnv_engine_params ep = mnv_engine_params_default();
    ep.n_threads = s->params.n_threads;
    ep.kv_dtype = s->params.kv_dtype;
    ep.kv_type_k = s->params.kv_type_k;
    ep.kv_type_v = s->params.kv_type_v;
    ep.kv_rotate = s->params.kv_rotate;
    ep.max_seqs = n_seq;
    ep.max_seq_tokens = s->params.n_ctx;
    ep.kv_block_tokens = 16;
    ep.kv_max_tokens = (int32_t)MNV_MIN(session_kv_tokens(&model->cfg, n_seq, s->params.n_ctx, s->params.n_batch),
                                        (int64_t)INT32_MAX);
    ep.step_tokens = s->params.n_batch;
    ep.exact_quant = s->params.exact_quant;
    ep.deterministic = s->params.deterministic;
    ep.device = s->params.device;
    ep.run_thread = 0;
    s->n_seq = n_seq;
    mnv_status st = mnv__engine_create(model, &ep, &s->e);
    if (st == MNV_OK) {
        mnv__engine_backend(s->e)->abort = &s->cancel; /* a cancel also stops a forward pass between nodes */
        s->seqs = calloc((size_t)n_seq, sizeof *s->seqs);
        s->parts = calloc((size_t)n_seq, sizeof *s->parts);
        s->last_logits = calloc((size_t)model->cfg.vocab_size, sizeof(float));
        if (!s->seqs || !s->parts || !s->last_logits) st = mnv_set_error(MNV_ERR_NOMEM, "out of memory");
        for (int32_t i = 0; st == MNV_OK && i < n_seq; i++) {
            s->seqs[i].seq = -1;
            if (!(s->seqs[i].hist = malloc((size_t)s->params.n_ctx * sizeof(int32_t))))
                st = mnv_set_error(MNV_ERR_NOMEM, "out of memory for a context of %d tokens", s->params.n_ctx);
        }
    }
    if (st != MNV_OK) {
        mnv_session_free(s);
        return st;
    }
    *out = s;
    return MNV_OK;
}

mnv_status mnv_session_create(mnv_model *model, const mnv_session_params *params, mnv_session **out) {
    return mnv_session_create_multi(model, params, 1, out);
}

void mnv_session_free(mnv_session *s) {
    if (!s) return;
    for (int32_t i = 0; s->seqs && i < s->n_seq; i++) free(s->seqs[i].hist);
    free(s->seqs);
    mnv__engine_destroy(s->e);
    free(s->parts);
    free(s->last_logits);
    free(s);
}

void mnv_session_reset(mnv_session *s) {
    if (!s) return;
    for (int32_t i = 0; i < s->n_seq; i++) {
        /* the blocks stay in the prefix cache: a new context that starts the same way reuses them */
        if (s->seqs[i].seq >= 0) mnv_kv_pool_seq_free(mnv__engine_pool(s->e), s->seqs[i].seq);
        s->seqs[i].seq = -1;
        s->seqs[i].n = 0;
    }
    s->n_past = 0;
    s->logits_valid = false;
    atomic_store(&s->cancel, 0);
}

void mnv_session_cancel(mnv_session *s) {
    if (s) atomic_store(&s->cancel, 1);
}

mnv_status mnv__session_check_cancel(mnv_session *s, const char *where) {
    if (!atomic_load_explicit(&s->cancel, memory_order_relaxed) || !atomic_exchange(&s->cancel, 0)) return MNV_OK;
    return mnv_set_error(MNV_ERR_CANCELLED, "%s: cancelled with %d tokens in the context", where, s->n_past);
}

mnv_status mnv_session_load_weights(mnv_session *s, mnv_progress_callback progress, void *user_data) {
    if (!s) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_session_load_weights: session is NULL");
    return mnv__engine_place_weights(s->e, progress, user_data);
}

mnv_status mnv_session_truncate(mnv_session *s, int32_t n) {
    if (!s) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_session_truncate: NULL session");
    if (n < 0 || n > s->n_past)
        return mnv_set_error(MNV_ERR_RANGE, "mnv_session_truncate: %d tokens asked, %d held", n, s->n_past);
    if (n != s->n_past) s->logits_valid = false; /* they were the logits of a dropped token */
    s->n_past = s->seqs[0].n = n; /* the next evaluation restarts the pool sequence from the history */
    return MNV_OK;
}

int32_t mnv_session_n_past(const mnv_session *s) { return s ? s->n_past : 0; }

/* The backend stopped a forward pass at the session's cancel request:
 * consume the request; nothing of the session changed. */
static mnv_status cancelled_in_forward(mnv_session *s, int32_t n_tokens) {
    char where[256];
    mnv_last_error_copy(where, sizeof where);
    atomic_store(&s->cancel, 0);
    return mnv_set_error(MNV_ERR_CANCELLED,
                         "cancelled inside the forward pass of a batch of %d tokens (%s) with %d tokens in the context",
                         n_tokens, where, s->n_past);
}

/* Local sequence i gets k tokens (ids) at position p0 <= its length: they
 * are written into its history, and its pool sequence is made to hold a
 * prefix of history[0, p0 + k): if it holds something else, it is
 * restarted from the history through the prefix cache. *n_pre: history
 * before p0 it lost, to evaluate again; with skip (no logits wanted for the
 * new tokens), *skipped: new tokens whose K/V the cache already held (at
 * least one token is always left to evaluate). */
static mnv_status seq_ready(mnv_session *s, int32_t i, int32_t p0, const int32_t *ids, int32_t k, bool skip,
                            int32_t *n_pre, int32_t *skipped) {
    mnv__local_seq *ls = &s->seqs[i];
    mnv_kv_pool *pool = mnv__engine_pool(s->e);
    *n_pre = *skipped = 0;
    if (p0 < 0 || p0 > ls->n)
        return mnv_set_error(MNV_ERR_RANGE, "sequence %d: position %d is past its %d tokens", i, p0, ls->n);
    if (p0 + k > s->params.n_ctx)
        return mnv_set_error(MNV_ERR_RANGE, "context full: %d tokens held, %d more, context length %d", p0, k,
                             s->params.n_ctx);
    ls->n = p0; /* a rewrite drops the tail */
    memcpy(ls->hist + p0, ids, (size_t)k * sizeof(int32_t));
    if (ls->seq >= 0 && mnv_kv_pool_seq_len(pool, ls->seq) == p0) return MNV_OK;
    if (ls->seq >= 0) mnv_kv_pool_seq_free(pool, ls->seq);
    ls->seq = -1;
    int64_t cached = 0;
    mnv_status st = mnv_kv_pool_seq_start(pool, ls->hist, skip ? p0 + k : p0 + 1, &ls->seq, &cached);
    if (st != MNV_OK) return st;
    if (cached <= p0)
        *n_pre = p0 - (int32_t)cached;
    else
        *skipped = (int32_t)cached - p0;
    return MNV_OK;
}

static mnv_status run_parts(mnv_session *s, mnv__step_part *parts, int32_t n, int32_t n_tokens, float *logits) {
    mnv_status st = mnv__engine_run(s->e, parts, n, logits, NULL, NULL);
    if (st == MNV_ERR_CANCELLED) return cancelled_in_forward(s, n_tokens);
    return st;
}

/* Group the batch's tokens by local sequence: first index, count, p0. */
static mnv_status check_batch(mnv_session *s, const mnv_batch *b, int32_t *first, int32_t *count) {
    const mnv_model_config *c = &s->model->cfg;
    for (int32_t i = 0; i < s->n_seq; i++) first[i] = -1, count[i] = 0;
    for (int32_t t = 0; t < b->n_tokens; t++) {
        if (b->ids[t] < 0 || b->ids[t] >= c->vocab_size)
            return mnv_set_error(MNV_ERR_RANGE, "token id %d at batch position %d is outside the vocabulary (%d)",
                                 b->ids[t], t, c->vocab_size);
        int32_t q = b->seq[t];
        if (q < 0 || q >= s->n_seq || b->pos[t] < 0 || b->pos[t] >= s->params.n_ctx)
            return mnv_set_error(MNV_ERR_RANGE, "position %d of sequence %d is outside the context (%d x %d)",
                                 b->pos[t], q, s->n_seq, s->params.n_ctx);
        if (first[q] < 0) first[q] = t;
        if (b->pos[t] != b->pos[first[q]] + count[q]++)
            return mnv_set_error(MNV_ERR_RANGE, "batch position %d: sequence %d's positions are not consecutive", t,
                                 q);
    }
    for (int32_t i = 0; i < b->n_out; i++)
        if (b->out_rows[i] < 0 || b->out_rows[i] >= b->n_tokens)
            return mnv_set_error(MNV_ERR_RANGE, "output row %d outside the batch", b->out_rows[i]);
    return MNV_OK;
}

mnv_status mnv_session_forward(mnv_session *s, const mnv_batch *b, float *logits_out) {
    int32_t V = s->model->cfg.vocab_size, *first = calloc((size_t)s->n_seq * 3 + (size_t)b->n_tokens, 4);
    if (!first) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    int32_t *count = first + s->n_seq, *row0 = count + s->n_seq, *ids = row0 + s->n_seq;
    mnv_status st = check_batch(s, b, first, count);
    int32_t n = 0, rows = 0, n_pre = 0, skipped = 0;
    for (int32_t q = 0; st == MNV_OK && q < s->n_seq; q++) {
        if (first[q] < 0) continue;
        for (int32_t t = first[q], j = 0; t < b->n_tokens; t++)
            if (b->seq[t] == q) ids[j++] = b->ids[t];
        int32_t p0 = b->pos[first[q]];
        st = seq_ready(s, q, p0, ids, count[q], false, &n_pre, &skipped);
        s->parts[n] = (mnv__step_part){s->seqs[q].seq, s->seqs[q].hist + p0 - n_pre, n_pre + count[q], n_pre};
        row0[q] = rows;
        n++;
        rows += count[q];
    }
    float *all = st == MNV_OK ? malloc((size_t)rows * (size_t)V * sizeof(float)) : NULL;
    if (st == MNV_OK && !all) st = mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    if (st == MNV_OK) st = run_parts(s, s->parts, n, b->n_tokens, all);
    if (st == MNV_OK) {
        for (int32_t q = 0; q < s->n_seq; q++)
            if (first[q] >= 0) s->seqs[q].n = b->pos[first[q]] + count[q];
        s->n_past = s->seqs[0].n;
        s->logits_valid = false;
        for (int32_t i = 0; logits_out && i < b->n_out; i++) {
            int32_t t = b->out_rows[i], q = b->seq[t];
            memcpy(logits_out + (size_t)i * V, all + (size_t)(row0[q] + b->pos[t] - b->pos[first[q]]) * V,
                   (size_t)V * sizeof(float));
        }
    }
    free(all);
    free(first);
    return st;
}

mnv_status mnv_session_eval(mnv_session *s, const int32_t *ids, size_t n, float *logits) {
    if (!s || (!ids && n)) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_session_eval: NULL argument");
    if (n == 0) return MNV_OK;
    if ((size_t)s->n_past + n > (size_t)s->params.n_ctx)
        return mnv_set_error(MNV_ERR_RANGE, "context full: %d tokens held, %zu more, context length %d", s->n_past,
                             n, s->params.n_ctx);
    int32_t V = s->model->cfg.vocab_size, nb = s->params.n_batch;
    for (size_t i = 0; i < n; i++) /* all or nothing: no batch runs before every id is checked */
        if (ids[i] < 0 || ids[i] >= V)
            return mnv_set_error(MNV_ERR_RANGE, "token id %d at position %zu is outside the vocabulary (%d)", ids[i],
                                 i, V);
    for (size_t done = 0; done < n;) {
        mnv_status cst = mnv__session_check_cancel(s, "mnv_session_eval");
        if (cst != MNV_OK) return cst;
        int32_t n_pre, skipped;
        bool all = logits != NULL;
        mnv_status st = seq_ready(s, 0, s->n_past, ids + done, (int32_t)(n - done), !all, &n_pre, &skipped);
        if (st != MNV_OK) return st;
        if (skipped) { /* the prefix cache held them: nothing to evaluate */
            s->n_past = s->seqs[0].n = s->n_past + skipped;
            done += (size_t)skipped;
        }
        int32_t cnt = (int32_t)MNV_MIN((size_t)nb, n - done);
        mnv__step_part part = {s->seqs[0].seq, s->seqs[0].hist + s->n_past - n_pre, n_pre + cnt, n_pre};
        /* history the pool lost (a long truncation, evicted blocks) is recomputed in batches first */
        while (st == MNV_OK && n_pre > 0 && part.n > nb) {
            mnv__step_part pre = part;
            pre.n = pre.out_from = MNV_MIN(n_pre, nb);
            st = run_parts(s, &pre, 1, pre.n, NULL);
            part.ids += pre.n, part.n -= pre.n, part.out_from -= pre.n, n_pre -= pre.n;
        }
        if (!all) part.out_from = part.n - 1;
        float *dst = all ? logits + done * (size_t)V : s->last_logits;
        if (st == MNV_OK) st = run_parts(s, &part, 1, cnt, dst);
        if (st == MNV_ERR_CANCELLED) {
            char msg[512];
            mnv_last_error_copy(msg, sizeof msg);
            return mnv_set_error(st, "mnv_session_eval: %s", msg);
        }
        if (st != MNV_OK) return st;
        if (all) memcpy(s->last_logits, dst + (size_t)(cnt - 1) * V, (size_t)V * sizeof(float));
        s->n_past = s->seqs[0].n = s->n_past + cnt;
        s->logits_valid = true;
        done += (size_t)cnt;
    }
    return MNV_OK;
}

mnv_status mnv__session_fill_random(mnv_session *s, const int32_t *ids, int32_t n) {
    if (!s || (!ids && n > 0) || n < 0) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv__session_fill_random: bad argument");
    if (n == 0) return MNV_OK;
    int32_t n_pre, skipped;
    mnv_status st = seq_ready(s, 0, s->n_past, ids, n, false, &n_pre, &skipped);
    if (st != MNV_OK) return st;
    if (n_pre == 0)
        st = mnv__engine_fill_random(s->e, s->seqs[0].seq, ids, n, s->params.n_batch,
                                     0x9E3779B97F4A7C15ull + (uint64_t)s->n_past);
    else
        st = mnv_set_error(MNV_ERR_INVALID_ARG, "filling the context: %d tokens of history would be recomputed", n_pre);
    if (st != MNV_OK) { /* the pool sequence may hold part of the fill: start over */
        mnv_session_reset(s);
        return st;
    }
    s->n_past = s->seqs[0].n = s->n_past + n;
    s->logits_valid = false;
    return MNV_OK;
}

mnv_status mnv_session_dump_graph(mnv_session *s, const char *path) {
    if (!s || !path) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_session_dump_graph: NULL argument");
    mnv__step_figures f;
    mnv__engine_last_step(s->e, &f);
    if (!f.graph || mnv_graph_n_nodes(f.graph) == 0) return mnv_set_error(MNV_ERR_INVALID_ARG, "no graph evaluated yet");
    return mnv_graph_dump_dot(f.graph, path);
}

mnv_status mnv_session_get_stats(const mnv_session *s, mnv_session_stats *out) {
    if (!s || !out) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_session_get_stats: NULL argument");
    memset(out, 0, sizeof *out);
    mnv__step_figures f;
    mnv__engine_last_step(s->e, &f);
    mnv_kv_pool_stats ps;
    mnv_kv_pool_stats_get(mnv__engine_pool(s->e), &ps);
    mnv_backend *be = mnv__engine_backend(s->e);
    out->n_nodes = f.n_nodes;
    out->build_seconds = f.build_sec;
    out->plan_seconds = f.plan_sec + f.fill_sec;
    out->compute_seconds = f.run_sec;
    out->arena_bytes = f.arena_bytes;
    out->kv_bytes = ps.bytes_total;
    out->n_ctx = s->params.n_ctx;
    out->n_threads = be->iface->n_threads(be);
    out->n_threads_requested = s->params.n_threads;
    return MNV_OK;
}

/* What a session will need, from config.json alone: the KV pool as the
 * session's engine sizes it (sliding-window layers keep only their ring). */
mnv_status mnv_model_estimate_memory(const char *dir, const mnv_session_params *session_params,
                                     mnv_memory_estimate *out) {
    if (!dir || !out) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_model_estimate_memory: NULL argument");
    memset(out, 0, sizeof *out);
    mnv_session_params sp = mnv_session_params_default();
    if (session_params) {
        if (session_params->size < offsetof(mnv_session_params, kv_dtype) || session_params->size > sizeof sp)
            return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_model_estimate_memory: params->size %u is not a known size",
                                 session_params->size);
        memcpy(&sp, session_params, session_params->size);
    }
    mnv_kv_type kt, vt;
    mnv_status st = mnv__kv_types("mnv_model_estimate_memory", sp.kv_dtype, sp.kv_type_k, sp.kv_type_v, &kt, &vt);
    if (st != MNV_OK) return st;
    char *path = mnv_path_join(dir, "config.json");
    if (!path) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    char *json = NULL;
    size_t len = 0;
    st = mnv_read_file(path, &json, &len);
    mnv_model_config *c = st == MNV_OK ? malloc(sizeof *c) : NULL;
    if (st == MNV_OK) st = c ? mnv_config_parse(json, len, path, c) : mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    free(json);
    mnv_model_info info;
    if (st == MNV_OK) st = mnv_config_estimate(path, &info);
    free(path);
    if (st == MNV_OK) {
        /* the same defaults mnv_session_create resolves */
        int32_t train = c->max_position_embeddings > 0 ? c->max_position_embeddings : 4096;
        out->n_ctx = sp.n_ctx > 0 ? sp.n_ctx : MNV_MIN(train, 4096);
        out->n_batch = sp.n_batch > 0 ? sp.n_batch : 512;
        out->weight_bytes = info.weight_bytes;
        mnv_kv_pool_params pp;
        mnv__kv_pool_params(c, kt, vt, 16, 1, out->n_ctx, session_kv_tokens(c, 1, out->n_ctx, out->n_batch), 0,
                            &pp);
        int64_t nb = mnv_kv_pool_plan_blocks(&pp);
        int32_t lmax = 0;
        for (int32_t g = 0; g < pp.n_groups; g++) lmax = MNV_MAX(lmax, pp.groups[g].n_layers);
        out->kv_bytes = nb > 0 ? (uint64_t)nb * (uint64_t)lmax * (uint64_t)pp.block_tokens *
                                     (mnv_kv_bytes_per_token_layer(kt, pp.n_kv_heads, pp.head_dim, pp.quant_group) +
                                      mnv_kv_bytes_per_token_layer(vt, pp.n_kv_heads, pp.head_dim, pp.quant_group)) / 2
                               : 0;
        out->compute_bytes = mnv__model_compute_bound(c, (uint64_t)MNV_MIN(out->n_batch, out->n_ctx)) +
                             (uint64_t)c->vocab_size * sizeof(float);
        out->total_bytes = out->weight_bytes + out->kv_bytes + out->compute_bytes;
    }
    free(c);
    return st;
}
