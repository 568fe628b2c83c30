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

static void free_cache(mnv_session *s) {
    for (int32_t l = 0; s->kv.k && l < s->kv.n_layer; l++) {
        s->be->iface->buffer_free(s->be, s->kv.k[l]);
        s->be->iface->buffer_free(s->be, s->kv.v[l]);
    }
    free(s->kv.k);
    free(s->kv.v);
}

static mnv_status alloc_cache(mnv_session *s, int32_t n_seq) {
    const mnv_model_config *c = &s->model->cfg;
    mnv_kv_cache *kv = &s->kv;
    kv->n_layer = c->num_hidden_layers;
    kv->n_seq = n_seq;
    kv->n_ctx = s->params.n_ctx;
    kv->dtype = s->params.kv_dtype;
    kv->k = calloc((size_t)kv->n_layer, sizeof(void *));
    kv->v = calloc((size_t)kv->n_layer, sizeof(void *));
    if (!kv->k || !kv->v) return mnv_set_error(MNV_ERR_NOMEM, "KV cache: out of memory");
    size_t bytes = (size_t)n_seq * (size_t)kv->n_ctx * (size_t)c->num_key_value_heads * (size_t)c->head_dim *
                   mnv_dtype_size(kv->dtype);
    for (int32_t l = 0; l < kv->n_layer; l++) {
        kv->k[l] = s->be->iface->buffer_alloc(s->be, bytes);
        kv->v[l] = s->be->iface->buffer_alloc(s->be, bytes);
        if (!kv->k[l] || !kv->v[l])
            return mnv_set_error(MNV_ERR_NOMEM, "KV cache: cannot allocate %zu bytes for layer %d", 2 * bytes, l);
        /* keep unwritten cache rows finite: a bug that reads them stays visible in tests, not UB */
        memset(kv->k[l], 0, bytes);
        memset(kv->v[l], 0, bytes);
    }
    return MNV_OK;
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
    mnv_dtype kvt = s->params.kv_dtype;
    if (kvt != MNV_DTYPE_F32 && kvt != MNV_DTYPE_BF16 && kvt != MNV_DTYPE_F16) {
        free(s);
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_session_create: kv_dtype must be F32, BF16 or F16, not %s",
                             mnv_dtype_name(kvt));
    }
    mnv_backend_params bp = {"cpu", s->params.n_threads, s->params.exact_quant};
    mnv_status st = mnv_backend_create(&bp, &s->be);
    if (st == MNV_OK) s->be->abort = &s->cancel; /* a cancel also stops a forward pass between nodes */
    if (st == MNV_OK) st = mnv_executor_create(s->be, &s->ex);
    if (st == MNV_OK) st = mnv_graph_create(128 + 96 * model->cfg.num_hidden_layers, &s->g);
    if (st == MNV_OK) st = alloc_cache(s, n_seq);
    if (st == MNV_OK) {
        s->last_logits = calloc((size_t)model->cfg.vocab_size, sizeof(float));
        s->scratch_ids = calloc((size_t)s->params.n_batch * 4, sizeof(int32_t));
        if (!s->last_logits || !s->scratch_ids) st = mnv_set_error(MNV_ERR_NOMEM, "out of memory");
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
    if (s->be) free_cache(s);
    mnv_executor_free(s->ex);
    mnv_graph_free(s->g);
    mnv_backend_free(s->be);
    free(s->last_logits);
    free(s->scratch_ids);
    free(s);
}

void mnv_session_reset(mnv_session *s) {
    if (!s) return;
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

mnv_status mnv_session_truncate(mnv_session *s, int32_t n) {
    if (!s) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_session_truncate: NULL session");
    if (n < 0 || n > s->n_past)
        return mnv_set_error(MNV_ERR_RANGE, "mnv_session_truncate: %d tokens asked, %d held", n, s->n_past);
    if (n != s->n_past) s->logits_valid = false; /* they were the logits of a dropped token */
    s->n_past = n; /* positions >= n are overwritten by the next evaluation */
    return MNV_OK;
}

int32_t mnv_session_n_past(const mnv_session *s) { return s ? s->n_past : 0; }

/* The backend stopped a forward pass at the session's cancel request:
 * consume the request; nothing of the session changed but cache rows past
 * n_past, which the next evaluation overwrites. */
static mnv_status cancelled_in_forward(mnv_session *s, const mnv_batch *b) {
    char where[256];
    mnv_last_error_copy(where, sizeof where);
    atomic_store(&s->cancel, 0);
    return mnv_set_error(MNV_ERR_CANCELLED,
                         "cancelled inside the forward pass of a batch of %d tokens (%s) with %d tokens in the context",
                         b->n_tokens, where, s->n_past);
}

mnv_status mnv_session_forward(mnv_session *s, const mnv_batch *b, float *logits_out) {
    const mnv_model_config *c = &s->model->cfg;
    for (int32_t t = 0; t < b->n_tokens; t++) {
        if (b->ids[t] < 0 || b->ids[t] >= c->vocab_size)
            return mnv_set_error(MNV_ERR_RANGE, "token id %d at batch position %d is outside the vocabulary (%d)",
                                 b->ids[t], t, c->vocab_size);
        if (b->pos[t] < 0 || b->pos[t] >= s->kv.n_ctx || b->seq[t] < 0 || b->seq[t] >= s->kv.n_seq)
            return mnv_set_error(MNV_ERR_RANGE, "position %d of sequence %d is outside the context (%lld x %lld)",
                                 b->pos[t], b->seq[t], (long long)s->kv.n_seq, (long long)s->kv.n_ctx);
    }
    for (int32_t i = 0; i < b->n_out; i++)
        if (b->out_rows[i] < 0 || b->out_rows[i] >= b->n_tokens)
            return mnv_set_error(MNV_ERR_RANGE, "output row %d outside the batch", b->out_rows[i]);
    double t0 = mnv_time_sec();
    mnv_graph_reset(s->g);
    mnv_status st = mnv_graph_reserve_inputs(s->g, (size_t)(3 * b->n_tokens + b->n_out) * 4 + 4 * 64);
    if (st != MNV_OK) return st;
    mnv_array *logits = mnv_model_build(s->model, s->g, b, &s->kv);
    if (!logits) return mnv_graph_status(s->g) != MNV_OK ? mnv_graph_status(s->g)
                                                         : mnv_set_error(MNV_ERR_INTERNAL, "graph build failed");
    double t1 = mnv_time_sec();
    st = mnv_executor_run(s->ex, s->g);
    double t2 = mnv_time_sec();
    s->last_build_sec = t1 - t0;
    s->last_plan_sec = mnv_executor_plan_seconds(s->ex);
    s->last_run_sec = t2 - t1 - s->last_plan_sec;
    if (st == MNV_ERR_CANCELLED) return cancelled_in_forward(s, b);
    if (st != MNV_OK) return st;
    if (logits_out) memcpy(logits_out, logits->data, (size_t)b->n_out * (size_t)c->vocab_size * sizeof(float));
    return MNV_OK;
}

mnv_status mnv_session_eval(mnv_session *s, const int32_t *ids, size_t n, float *logits) {
    if (!s || (!ids && n)) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_session_eval: NULL argument");
    if (n == 0) return MNV_OK;
    if ((size_t)s->n_past + n > (size_t)s->kv.n_ctx)
        return mnv_set_error(MNV_ERR_RANGE, "context full: %d tokens held, %zu more, context length %lld", s->n_past,
                             n, (long long)s->kv.n_ctx);
    int32_t V = s->model->cfg.vocab_size, nb = s->params.n_batch;
    for (size_t i = 0; i < n; i++) /* all or nothing: no batch runs before every id is checked */
        if (ids[i] < 0 || ids[i] >= V)
            return mnv_set_error(MNV_ERR_RANGE, "token id %d at position %zu is outside the vocabulary (%d)", ids[i],
                                 i, V);
    int32_t *pos = s->scratch_ids, *seq = pos + nb, *rows = seq + nb;
    for (size_t done = 0; done < n;) {
        mnv_status cst = mnv__session_check_cancel(s, "mnv_session_eval");
        if (cst != MNV_OK) return cst;
        int32_t cnt = (int32_t)MNV_MIN((size_t)nb, n - done);
        for (int32_t i = 0; i < cnt; i++) {
            pos[i] = s->n_past + i;
            seq[i] = 0;
            rows[i] = i;
        }
        bool all = logits != NULL;
        mnv_batch b = {cnt, ids + done, pos, seq, all ? cnt : 1, all ? rows : &rows[cnt - 1]};
        float *dst = all ? logits + done * (size_t)V : s->last_logits;
        mnv_status st = mnv_session_forward(s, &b, dst);
        if (st == MNV_ERR_CANCELLED) {
            char msg[512];
            mnv_last_error_copy(msg, sizeof msg);
            return mnv_set_error(st, "mnv_session_eval: %s", msg);
        }
        if (st != MNV_OK) return st;
        if (all) memcpy(s->last_logits, dst + (size_t)(cnt - 1) * V, (size_t)V * sizeof(float));
        s->n_past += cnt;
        s->logits_valid = true;
        done += (size_t)cnt;
    }
    return MNV_OK;
}

mnv_status mnv_session_dump_graph(mnv_session *s, const char *path) {
    if (!s || !path) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_session_dump_graph: NULL argument");
    if (mnv_graph_n_nodes(s->g) == 0) return mnv_set_error(MNV_ERR_INVALID_ARG, "no graph evaluated yet");
    return mnv_graph_dump_dot(s->g, path);
}

mnv_status mnv_session_get_stats(const mnv_session *s, mnv_session_stats *out) {
    if (!s || !out) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_session_get_stats: NULL argument");
    memset(out, 0, sizeof *out);
    const mnv_model_config *c = &s->model->cfg;
    out->n_nodes = mnv_graph_n_nodes(s->g);
    out->build_seconds = s->last_build_sec;
    out->plan_seconds = s->last_plan_sec;
    out->compute_seconds = s->last_run_sec;
    out->arena_bytes = mnv_executor_arena_size(s->ex);
    out->kv_bytes = 2ull * (uint64_t)s->kv.n_layer * (uint64_t)s->kv.n_seq * (uint64_t)s->kv.n_ctx *
                    (uint64_t)c->num_key_value_heads * (uint64_t)c->head_dim * mnv_dtype_size(s->kv.dtype);
    out->n_ctx = (int32_t)s->kv.n_ctx;
    out->n_threads = s->be->iface->n_threads(s->be);
    out->n_threads_requested = s->params.n_threads;
    return MNV_OK;
}
