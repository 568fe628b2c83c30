/* The engine's core: its parts (backend, KV block pool, graph cache) and one
 * forward pass over a ragged batch of pool sequences. The scheduler of
 * requests (engine_sched.c) and the session (session.c) build on it. */
#include "runtime/engine_int.h"

#include "core/topcands.h"
#include "io/safetensors.h"

#include <stdio.h>
#include <stdlib.h>

_Static_assert(MNV_MAX_KV_GROUPS == MNV_KV_MAX_GROUPS, "one group limit for the model and the pool");

mnv_engine_params mnv_engine_params_default(void) {
    mnv_engine_params p;
    memset(&p, 0, sizeof p);
    p.size = sizeof p;
    p.kv_dtype = MNV_DTYPE_F32;
    p.prefix_cache = 1;
    p.run_thread = 1;
    return p;
}

mnv_kv_pool *mnv__engine_pool(mnv_engine *e) { return e->pool; }
mnv_backend *mnv__engine_backend(mnv_engine *e) { return e->be; }
void mnv__engine_set_graph_cache(mnv_engine *e, bool on) { e->no_graph_cache = !on; }
void mnv__engine_last_step(const mnv_engine *e, mnv__step_figures *out) { *out = e->last; }

static mnv_status resolve_params(const mnv_model *m, const mnv_engine_params *in, mnv_engine_params *p) {
    *p = mnv_engine_params_default();
    if (in) { /* a caller built against an older, smaller struct: the rest keeps its defaults */
        if (in->size < offsetof(mnv_engine_params, reserved) || in->size > sizeof *p)
            return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_engine_create: params->size %u is not a known size",
                                 in->size);
        memcpy(p, in, in->size);
    }
    int32_t train = m->cfg.max_position_embeddings > 0 ? m->cfg.max_position_embeddings : 4096;
    if (p->n_threads <= 0) p->n_threads = m->params.n_threads;
    if (p->max_seqs <= 0) p->max_seqs = 8;
    if (p->max_seq_tokens <= 0) p->max_seq_tokens = MNV_MIN(train, 4096);
    if (p->kv_block_tokens <= 0) p->kv_block_tokens = 16;
    if (p->step_tokens <= 0) p->step_tokens = 512;
    if (p->kv_max_tokens <= 0) { /* every sequence at full length, in whole blocks */
        int64_t per = ((int64_t)p->max_seq_tokens + p->kv_block_tokens - 1) / p->kv_block_tokens * p->kv_block_tokens;
        p->kv_max_tokens = (int32_t)MNV_MIN((int64_t)p->max_seqs * per, (int64_t)65536);
    }
    struct {
        const char *name;
        int64_t v, lo, hi;
    } chk[] = {
        {"max_seqs", p->max_seqs, 1, 4096},
        {"max_seq_tokens", p->max_seq_tokens, 1, INT32_MAX / 2},
        {"kv_block_tokens", p->kv_block_tokens, 1, 4096},
        {"step_tokens", p->step_tokens, 1, 1 << 20},
        {"host_sampling", p->host_sampling, -1, 1},
    };
    for (size_t i = 0; i < sizeof chk / sizeof chk[0]; i++)
        if (chk[i].v < chk[i].lo || chk[i].v > chk[i].hi)
            return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_engine_create: %s = %lld is outside [%lld, %lld]",
                                 chk[i].name, (long long)chk[i].v, (long long)chk[i].lo, (long long)chk[i].hi);
    /* every running sequence decodes one token per step */
    if (p->step_tokens < p->max_seqs) p->step_tokens = p->max_seqs;
    if (p->kv_rotate < 0 || p->kv_rotate >= MNV_KV_ROTATE_COUNT)
        return mnv_set_error(MNV_ERR_INVALID_ARG,
                             "mnv_engine_create: kv_rotate = %d is not auto (0), on (1) or off (2)",
                             p->kv_rotate);
    mnv_kv_type kt, vt;
    return mnv__kv_types("mnv_engine_create", p->kv_dtype, p->kv_type_k, p->kv_type_v, &kt, &vt);
}

/* The rotation block of a side of type t under setting r (0: not rotated).
 * AUTO turns the 4-bit sides only: at 8 bits the rotation did not pay
 * (bench/NOTES.md, "KV rotation"). */
static int32_t rot_block(int32_t r, mnv_kv_type t, int32_t head_dim) {
    bool on = r == MNV_KV_ROTATE_ON || (r == MNV_KV_ROTATE_AUTO && t == MNV_KV_Q4);
    return on ? mnv_kv_rotation_block(head_dim) : 0;
}

mnv_status mnv__kv_types(const char *who, mnv_dtype kv_dtype, int32_t kv_type_k, int32_t kv_type_v, mnv_kv_type *k,
                         mnv_kv_type *v) {
    mnv_kv_type d = kv_dtype == MNV_DTYPE_F32 ? MNV_KV_F32 : kv_dtype == MNV_DTYPE_F16 ? MNV_KV_F16
                  : kv_dtype == MNV_DTYPE_BF16 ? MNV_KV_BF16 : MNV_KV_DEFAULT;
    if (d == MNV_KV_DEFAULT && (kv_type_k == MNV_KV_DEFAULT || kv_type_v == MNV_KV_DEFAULT))
        return mnv_set_error(MNV_ERR_INVALID_ARG, "%s: kv_dtype must be F32, BF16 or F16, not %s", who,
                             mnv_dtype_name(kv_dtype));
    const int32_t t[2] = {kv_type_k, kv_type_v};
    for (int i = 0; i < 2; i++)
        if (t[i] < MNV_KV_DEFAULT || t[i] >= MNV_KV_TYPE_COUNT)
            return mnv_set_error(MNV_ERR_INVALID_ARG, "%s: %s = %d is not a KV type", who,
                                 i ? "kv_type_v" : "kv_type_k", t[i]);
    *k = kv_type_k == MNV_KV_DEFAULT ? d : (mnv_kv_type)kv_type_k;
    *v = kv_type_v == MNV_KV_DEFAULT ? d : (mnv_kv_type)kv_type_v;
    return MNV_OK;
}

void mnv__kv_pool_params(const mnv_model_config *c, mnv_kv_type k_type, mnv_kv_type v_type, int32_t block_tokens,
                         int32_t max_seqs,
                         int32_t max_seq_tokens, int64_t max_tokens, uint64_t budget_bytes, mnv_kv_pool_params *pp) {
    int32_t window[MNV_MAX_KV_GROUPS] = {0}, n_groups = 0, L = c->num_hidden_layers;
    int32_t *lg = calloc((size_t)MNV_MAX(L, 1) * 2, sizeof(int32_t));
    *pp = mnv_kv_pool_params_default();
    if (lg) mnv_model_kv_groups(c, &n_groups, window, lg, lg + L);
    pp->k_type = k_type;
    pp->v_type = v_type;
    pp->quant_group = mnv_kv_default_group(c->head_dim);
    pp->n_kv_heads = c->num_key_value_heads;
    pp->head_dim = c->head_dim;
    pp->block_tokens = block_tokens;
    pp->n_groups = n_groups;
    for (int32_t g = 0; g < n_groups; g++) pp->groups[g] = (mnv_kv_group){0, window[g]};
    for (int32_t l = 0; lg && l < L; l++) pp->groups[lg[l]].n_layers++;
    free(lg);
    pp->budget_bytes = budget_bytes;
    /* default: every sequence at full length, in whole blocks */
    pp->max_tokens = max_tokens > 0 ? max_tokens
                                    : (int64_t)max_seqs * ((max_seq_tokens + block_tokens - 1) / block_tokens * block_tokens);
    pp->max_seqs = max_seqs;
    pp->max_seq_tokens = max_seq_tokens;
}

/* The pool's copy on write, on the backend's memory. */
static mnv_status kv_copy(void *ctx, uint64_t dst, uint64_t src, uint64_t size) {
    mnv_engine *e = ctx;
    return mnv_buffer_copy(e->kv_mem, (size_t)dst, e->kv_mem, (size_t)src, (size_t)size);
}

/* The block pool, and its block memory as a backend buffer. */
static mnv_status make_pool(mnv_engine *e) {
    const mnv_model_config *c = &e->model->cfg;
    int32_t L = c->num_hidden_layers, window[MNV_MAX_KV_GROUPS] = {0};
    e->layer_group = calloc((size_t)L, sizeof(int32_t));
    e->layer_index = calloc((size_t)L, sizeof(int32_t));
    e->kv_k = calloc((size_t)L, sizeof(void *));
    e->kv_v = calloc((size_t)L, sizeof(void *));
    if (!e->layer_group || !e->layer_index || !e->kv_k || !e->kv_v)
        return mnv_set_error(MNV_ERR_NOMEM, "engine: out of memory");
    mnv_model_kv_groups(c, &e->n_groups, window, e->layer_group, e->layer_index);
    memcpy(e->window, window, sizeof e->window);
    mnv_kv_pool_params pp;
    mnv_kv_type kt, vt;
    mnv_status st = mnv__kv_types("mnv_engine_create", e->p.kv_dtype, e->p.kv_type_k, e->p.kv_type_v, &kt, &vt);
    if (st != MNV_OK) return st;
    mnv__kv_pool_params(c, kt, vt, e->p.kv_block_tokens, e->p.max_seqs, e->p.max_seq_tokens,
                        e->p.kv_max_tokens, e->p.kv_budget_bytes, &pp);
    pp.prefix_cache = e->p.prefix_cache;
    pp.copy = kv_copy;
    pp.copy_ctx = e;
    if ((st = mnv_kv_pool_create(&pp, &e->pool)) != MNV_OK) return st;
    mnv_kv_pool_stats ps;
    mnv_kv_pool_stats_get(e->pool, &ps);
    if ((st = mnv_buffer_alloc(e->be, (size_t)ps.bytes_total, &e->kv_mem)) != MNV_OK) return st;
    e->kv = (mnv_kv_cache){.n_layer = L, .n_blocks = ps.blocks_total, .block_tokens = e->p.kv_block_tokens,
                           .block_stride = (int64_t)ps.block_bytes, .k = e->kv_k, .v = e->kv_v,
                           .layer_group = e->layer_group};
    mnv_kv_layout_make(kt, c->head_dim, pp.quant_group, &e->kv.k_lay); /* checked by the pool */
    mnv_kv_layout_make(vt, c->head_dim, pp.quant_group, &e->kv.v_lay);
    e->kv.rot_k = rot_block(e->p.kv_rotate, kt, c->head_dim);
    e->kv.rot_v = rot_block(e->p.kv_rotate, vt, c->head_dim);
    uint8_t *base = mnv_buffer_addr(e->kv_mem); /* an address for kernels, not for the host */
    for (int32_t l = 0; l < L; l++) {
        e->kv_k[l] = base + mnv_kv_pool_offset(e->pool, 0, e->layer_index[l], 0, 0);
        e->kv_v[l] = base + mnv_kv_pool_offset(e->pool, 0, e->layer_index[l], 1, 0);
    }
    return MNV_OK;
}

mnv_status mnv__engine_create(mnv_model *model, const mnv_engine_params *params, mnv_engine **out) {
    if (!out) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_engine_create: out is NULL");
    *out = NULL;
    if (!model) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_engine_create: model is NULL");
    mnv_engine *e = calloc(1, sizeof *e);
    if (!e) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    e->model = model;
    mnv_status st = resolve_params(model, params, &e->p);
    if (st != MNV_OK) {
        free(e);
        return st;
    }
    mnv_backend_params bp = {.name = e->p.device, .n_threads = e->p.n_threads, .exact_quant = e->p.exact_quant,
                             .row_invariant = e->p.deterministic};
    st = mnv_backend_create(&bp, &e->be);
    if (st == MNV_OK) st = mnv_executor_create(e->be, &e->ex);
    if (st == MNV_OK) st = make_pool(e);
    /* the step arrays (ids, tables, slots) are sized by the first steps and grow only */
    if (st == MNV_OK && !(e->b_tables = calloc((size_t)e->n_groups, sizeof(int32_t *))))
        st = mnv_set_error(MNV_ERR_NOMEM, "engine: out of memory");
    if (st != MNV_OK) {
        mnv__engine_destroy(e);
        return st;
    }
    *out = e;
    return MNV_OK;
}

void mnv__engine_destroy(mnv_engine *e) {
    if (!e) return;
    for (int i = 0; i < MNV_GCACHE; i++) mnv_graph_free(e->gc[i].g);
    mnv_executor_free(e->ex);
    mnv_buffer_free(e->kv_mem);
    mnv_backend_free(e->be);
    mnv_kv_pool_free(e->pool);
    for (int32_t g = 0; e->b_tables && g < e->n_groups; g++) free(e->b_tables[g]);
    free(e->b_tables);
    free(e->b_ids);
    free(e->b_slots);
    free(e->layer_group);
    free(e->layer_index);
    free(e->kv_k);
    free(e->kv_v);
    free(e);
}

/* ---- the graph cache ---------------------------------------------------------------- */

static bool same_shape(const mnv__gentry *a, const mnv__gentry *b, int32_t n_groups) {
    if (a->T != b->T || a->S != b->S || a->n_out != b->n_out || a->all_rows != b->all_rows ||
        a->with_cands != b->with_cands)
        return false;
    for (int32_t g = 0; g < n_groups; g++)
        if (a->W[g] != b->W[g]) return false;
    return true;
}

/* The entry for the step's shape: a hit, or the least recently used slot
 * rebuilt for it. */
static mnv_status graph_for(mnv_engine *e, const mnv__gentry *key, const mnv_batch *b, mnv__gentry **out) {
    mnv__gentry *victim = &e->gc[0];
    e->tick++;
    for (int i = 0; i < MNV_GCACHE; i++) {
        mnv__gentry *c = &e->gc[i];
        if (c->used && c->logits && !e->no_graph_cache && same_shape(c, key, e->n_groups)) {
            c->used = e->tick;
            double t0 = mnv_time_sec();
            mnv_step_inputs_fill(&c->in, b);
            e->last.fill_sec = mnv_time_sec() - t0;
            e->last.build_sec = e->last.plan_sec = 0;
            e->last.cache_hit = true;
            e->stats.graph_cache_hits++;
            *out = c;
            return MNV_OK;
        }
        if (c->used < victim->used) victim = c;
    }
    e->stats.graph_cache_misses++;
    e->last.cache_hit = false;
    double t0 = mnv_time_sec();
    mnv_graph *g = victim->g;
    *victim = *key;
    victim->g = g;
    victim->used = e->tick;
    victim->logits = victim->argmax = victim->cands = NULL;
    mnv_status st = g ? MNV_OK : mnv_graph_create(128 + 96 * e->model->cfg.num_hidden_layers, &victim->g);
    if (st != MNV_OK) return st;
    mnv_graph_reset(victim->g);
    st = mnv_graph_reserve_inputs(victim->g, mnv_step_inputs_bytes(b, e->n_groups));
    if (st == MNV_OK) st = mnv_step_inputs_create(victim->g, b, e->n_groups, &victim->in);
    if (st != MNV_OK) return st;
    mnv_array *logits = mnv_model_build(e->model, victim->g, &victim->in, &e->kv);
    if (!logits)
        return mnv_graph_status(victim->g) != MNV_OK ? mnv_graph_status(victim->g)
                                                     : mnv_set_error(MNV_ERR_INTERNAL, "graph build failed");
    mnv_array *argmax = NULL;
    if (key->n_out > 0) { /* each wanted row's greedy pick, beside the rows themselves */
        if (!(argmax = mnv_argmax(victim->g, logits))) return mnv_graph_status(victim->g);
        mnv_set_output(argmax);
    }
    mnv_array *cands = NULL;
    if (key->n_out > 0 && key->with_cands) { /* and their sampling candidates */
        if (!(cands = mnv_top_cands(victim->g, logits))) return mnv_graph_status(victim->g);
        mnv_set_output(cands);
    }
    double t1 = mnv_time_sec();
    if ((st = mnv_executor_plan(e->ex, victim->g, &victim->arena)) != MNV_OK) return st;
    victim->logits = logits;
    victim->argmax = argmax;
    victim->cands = cands;
    e->last.build_sec = t1 - t0;
    e->last.plan_sec = mnv_time_sec() - t1;
    e->last.fill_sec = 0;
    *out = victim;
    return MNV_OK;
}

mnv_status mnv__engine_place_weights(mnv_engine *e, mnv_progress_callback progress, void *user_data) {
    if (!e->be->iface->place_weights) return MNV_OK; /* weights are read where they are */
    const mnv_st_set *set = e->model->st;
    const uint64_t step = 256ull << 20;
    uint64_t total = 0, done = 0, next = step;
    /* the checkpoint's matrices and stacks that graphs read where they are
     * mapped (its 1-d tensors were turned into f32 at load, and tensors bind
     * copied into another layout are read from the copy: those go with the
     * first graph that reads them) */
    for (size_t i = 0; i < mnv_st_count(set); i++) {
        const mnv_st_tensor *t = mnv_st_get(set, i);
        if (t->ndim >= 2 && !mnv__model_is_copied(e->model, t->data)) total += t->nbytes;
    }
    if (progress) progress(user_data, 0, total);
    for (size_t i = 0; i < mnv_st_count(set); i++) {
        const mnv_st_tensor *t = mnv_st_get(set, i);
        if (t->ndim < 2 || mnv__model_is_copied(e->model, t->data)) continue;
        mnv_status st = e->be->iface->place_weights(e->be, t->data, t->nbytes, t->name);
        if (st != MNV_OK) return st;
        done += t->nbytes;
        if (progress && done >= next && done < total) {
            progress(user_data, done, total);
            next = done + step;
        }
    }
    e->be->iface->synchronize(e->be);
    if (progress) progress(user_data, total, total);
    return MNV_OK;
}

mnv_status mnv__engine_read_logits(mnv_engine *e, int32_t row, float *dst) {
    const mnv__gentry *ge = e->last_run;
    const size_t V = (size_t)e->model->cfg.vocab_size;
    if (!ge || !ge->logits || row < 0 || row >= ge->n_out)
        return mnv_set_error(MNV_ERR_INTERNAL, "engine: no row %d of logits in the last pass", row);
    return mnv_executor_read_at(e->ex, ge->logits, (size_t)row * V * sizeof(float), dst, V * sizeof(float));
}

static int32_t pow2_at_least(int64_t n) {
    int32_t w = 1;
    while (w < n) w <<= 1;
    return w;
}

/* ---- one forward pass ------------------------------------------------------------- */

static mnv_status check_parts(mnv_engine *e, const mnv__step_part *parts, int32_t n_parts, int32_t *T_out,
                              int32_t *n_out) {
    int32_t T = 0, nout = 0, V = e->model->cfg.vocab_size;
    *T_out = *n_out = 0;
    if (n_parts < 1 || n_parts > e->p.max_seqs)
        return mnv_set_error(MNV_ERR_INTERNAL, "engine: a step of %d sequences (at most %d)", n_parts, e->p.max_seqs);
    for (int32_t i = 0; i < n_parts; i++) {
        const mnv__step_part *pt = &parts[i];
        if (pt->n < 1 || pt->out_from < 0 || pt->out_from > pt->n)
            return mnv_set_error(MNV_ERR_INTERNAL, "engine: step part %d: %d tokens, rows from %d", i, pt->n,
                                 pt->out_from);
        for (int32_t t = 0; t < pt->n; t++)
            if (pt->ids[t] < 0 || pt->ids[t] >= V)
                return mnv_set_error(MNV_ERR_RANGE, "token id %d at position %d is outside the vocabulary (%d)",
                                     pt->ids[t], t, V);
        T += pt->n;
        nout += pt->n - pt->out_from;
    }
    if (T > (1 << 24)) return mnv_set_error(MNV_ERR_RANGE, "engine: a step of %d tokens", T);
    *T_out = T;
    *n_out = nout;
    return MNV_OK;
}

/* Step arrays big enough for T tokens (a session's recomputed prefix may
 * make a step longer than step_tokens). */
static mnv_status reserve_step(mnv_engine *e, int32_t T) {
    if (T <= e->b_cap) return MNV_OK;
    int32_t S = e->p.max_seqs;
    int32_t *ids = realloc(e->b_ids, ((size_t)T * 4 + (size_t)S) * sizeof(int32_t));
    if (!ids) return mnv_set_error(MNV_ERR_NOMEM, "engine: out of memory for a step of %d tokens", T);
    e->b_ids = ids;
    int32_t *sl = realloc(e->b_slots, (size_t)e->n_groups * (size_t)T * sizeof(int32_t));
    if (!sl) return mnv_set_error(MNV_ERR_NOMEM, "engine: out of memory for a step of %d tokens", T);
    e->b_slots = sl;
    e->b_cap = T;
    return MNV_OK;
}

/* Block tables of the step's sequences for group g, padded to W with -1. */
static mnv_status fill_tables(mnv_engine *e, const mnv__step_part *parts, int32_t n_parts, int32_t g, int32_t *W) {
    int64_t wmax = 1;
    for (int32_t i = 0; i < n_parts; i++) {
        int64_t n;
        mnv_kv_pool_table(e->pool, parts[i].seq, g, &n);
        wmax = MNV_MAX(wmax, n);
    }
    *W = pow2_at_least(wmax);
    size_t need = (size_t)n_parts * (size_t)*W;
    if (need > e->b_tcap[g]) {
        int32_t *t = realloc(e->b_tables[g], MNV_MAX(need, (size_t)e->p.max_seqs * (size_t)*W) * sizeof(int32_t));
        if (!t) return mnv_set_error(MNV_ERR_NOMEM, "engine: out of memory for block tables");
        e->b_tables[g] = t;
        e->b_tcap[g] = MNV_MAX(need, (size_t)e->p.max_seqs * (size_t)*W);
    }
    for (int32_t i = 0; i < n_parts; i++) {
        int64_t n;
        const int32_t *tab = mnv_kv_pool_table(e->pool, parts[i].seq, g, &n);
        int32_t *row = e->b_tables[g] + (size_t)i * (size_t)*W;
        for (int64_t j = 0; j < *W; j++) row[j] = j < n ? tab[j] : -1;
    }
    return MNV_OK;
}

mnv_status mnv__engine_run(mnv_engine *e, const mnv__step_part *parts, int32_t n_parts, float *logits,
                           int32_t *argmax, float *cands) {
    int32_t T = 0, nout = 0;
    mnv_status st = check_parts(e, parts, n_parts, &T, &nout);
    if (st == MNV_OK) st = reserve_step(e, T);
    for (int32_t i = 0; st == MNV_OK && i < n_parts; i++)
        st = mnv_kv_pool_prepare_append(e->pool, parts[i].seq, parts[i].n);
    if (st != MNV_OK) return st;
    double t0 = mnv_time_sec();
    int32_t *ids = e->b_ids, *pos = ids + T, *seq = pos + T, *rows = seq + T;
    int32_t B = e->p.kv_block_tokens;
    mnv_batch b = {.n_tokens = T, .ids = ids, .pos = pos, .seq = seq, .n_out = nout, .out_rows = rows,
                   .n_groups = e->n_groups, .n_seqs = n_parts};
    mnv__gentry key = {.T = T, .S = n_parts, .n_out = nout, .with_cands = cands != NULL};
    for (int32_t g = 0; g < e->n_groups; g++) {
        if ((st = fill_tables(e, parts, n_parts, g, &key.W[g])) != MNV_OK) return st;
        b.tables[g] = e->b_tables[g];
        b.table_width[g] = key.W[g];
        b.slots[g] = e->b_slots + (size_t)g * (size_t)T;
    }
    int32_t t = 0, r = 0;
    for (int32_t i = 0; i < n_parts; i++) {
        const mnv__step_part *pt = &parts[i];
        int64_t len = mnv_kv_pool_seq_len(e->pool, pt->seq);
        for (int32_t j = 0; j < pt->n; j++, t++) {
            ids[t] = pt->ids[j];
            pos[t] = (int32_t)(len + j);
            seq[t] = i;
            if (j >= pt->out_from) rows[r++] = t;
            for (int32_t g = 0; g < e->n_groups; g++) {
                int32_t blk = e->b_tables[g][(size_t)i * (size_t)key.W[g] + (size_t)(pos[t] / B)];
                e->b_slots[(size_t)g * (size_t)T + (size_t)t] = blk * B + pos[t] % B;
            }
        }
    }
    key.all_rows = mnv_rows_are_identity(&b);
    mnv__gentry *ge = NULL;
    if ((st = graph_for(e, &key, &b, &ge)) != MNV_OK) return st;
    double t1 = mnv_time_sec();
    st = mnv_executor_run_planned(e->ex, ge->g, ge->arena);
    double t2 = mnv_time_sec();
    e->last.n_nodes = mnv_graph_n_nodes(ge->g);
    e->last.run_sec = t2 - t1;
    e->last.arena_bytes = mnv_executor_arena_size(e->ex);
    e->last.graph = ge->g;
    e->last_run = ge;
    e->stats.host_seconds += t1 - t0;
    e->stats.compute_seconds += t2 - t1;
    if (st != MNV_OK) return st;
    if (logits && nout)
        st = mnv_executor_read(e->ex, ge->logits, logits,
                               (size_t)nout * (size_t)e->model->cfg.vocab_size * sizeof(float));
    if (st == MNV_OK && argmax && nout) st = mnv_executor_read(e->ex, ge->argmax, argmax, (size_t)nout * sizeof(int32_t));
    if (st == MNV_OK && cands && nout)
        st = mnv_executor_read(e->ex, ge->cands, cands, (size_t)nout * MNV_TOP_CANDS_ROW * sizeof(float));
    for (int32_t i = 0; st == MNV_OK && i < n_parts; i++)
        st = mnv_kv_pool_commit(e->pool, parts[i].seq, parts[i].ids, parts[i].n);
    return st;
}
