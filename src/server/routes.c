/* The endpoints: /health, /v1/models, /metrics, /tokenize, /detokenize,
 * /v1/completions and /v1/chat/completions (whole answers, or server-sent
 * events ending in "data: [DONE]"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "server/server_int.h"

/* ---- small endpoints -------------------------------------------------------------------- */

void srv_h_health(srv_conn *c, const cJSON *body) {
    mnv__server *s = srv_conn_server(c);
    cJSON *o = cJSON_CreateObject();
    bool ready = atomic_load(&s->ready);
    cJSON_AddStringToObject(o, "status", !ready ? "loading" : atomic_load(&s->stopping) ? "stopping" : "ok");
    srv_reply_json(c, ready ? 200 : 503, o);
}

void srv_h_models(srv_conn *c, const cJSON *body) {
    mnv__server *s = srv_conn_server(c);
    cJSON *o = cJSON_CreateObject(), *data = cJSON_CreateArray(), *m = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON_AddStringToObject(m, "id", s->model_id);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", 0);
    cJSON_AddStringToObject(m, "owned_by", "minerva");
    cJSON_AddNumberToObject(m, "max_model_len", s->p.max_seq_tokens);
    cJSON_AddItemToArray(data, m);
    cJSON_AddItemToObject(o, "data", data);
    srv_reply_json(c, 200, o);
}

void srv_h_metrics(srv_conn *c, const cJSON *body) {
    mnv__server *s = srv_conn_server(c);
    srv_buf b = {0};
    srv_metrics_text(&s->metrics, s->p.engine, atomic_load(&s->active), &b);
    srv_reply_text(c, 200, "text/plain; version=0.0.4", b.p ? b.p : "", b.len);
    srv_buf_free(&b);
}

static bool tokenize(mnv__server *s, const char *text, size_t len, bool bos, int32_t **ids, size_t *n, srv_err *e) {
    size_t need = 0;
    mnv_tokenize(s->tok, text, len, bos, NULL, 0, &need);
    *n = 0;
    *ids = malloc(MNV_MAX(need, 1) * sizeof(int32_t));
    if (!*ids) return srv_err_set(e, 500, NULL, NULL, "out of memory");
    if (need && mnv_tokenize(s->tok, text, len, bos, *ids, need, n) != MNV_OK)
        return srv_err_set(e, 500, NULL, NULL, "tokenizing failed: %s", mnv_last_error());
    return true;
}

void srv_h_tokenize(srv_conn *c, const cJSON *body) {
    mnv__server *s = srv_conn_server(c);
    srv_err e;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(body, "content");
    if (!t) t = cJSON_GetObjectItemCaseSensitive(body, "prompt");
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(body, "add_special");
    if (!cJSON_IsString(t)) {
        srv_err_set(&e, 400, "content", "invalid_type", "%s", "'content' must be a string");
        srv_reply_error(c, &e);
        return;
    }
    int32_t *ids;
    size_t n;
    if (!tokenize(s, t->valuestring, strlen(t->valuestring), cJSON_IsTrue(sp) && mnv_tokenizer_add_bos(s->tok), &ids, &n, &e)) {
        free(ids);
        srv_reply_error(c, &e);
        return;
    }
    cJSON *o = cJSON_CreateObject(), *a = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
    cJSON_AddItemToObject(o, "tokens", a);
    free(ids);
    srv_reply_json(c, 200, o);
}

/* Token ids of a JSON array; 400 on anything but ids of the vocabulary. */
static bool ids_of(mnv__server *s, const cJSON *a, const char *param, int32_t **ids, size_t *n, srv_err *e) {
    *n = 0;
    *ids = malloc((size_t)MNV_MAX(cJSON_GetArraySize(a), 1) * sizeof(int32_t));
    if (!*ids) return srv_err_set(e, 500, NULL, NULL, "out of memory");
    const cJSON *v;
    cJSON_ArrayForEach(v, a) {
        if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= s->n_vocab || v->valuedouble != (int32_t)v->valuedouble)
            return srv_err_set(e, 400, param, "invalid_value", "%s: %g is not a token id of the vocabulary (%d)", param,
                               cJSON_IsNumber(v) ? v->valuedouble : -1.0, s->n_vocab);
        (*ids)[(*n)++] = (int32_t)v->valuedouble;
    }
    return true;
}

void srv_h_detokenize(srv_conn *c, const cJSON *body) {
    mnv__server *s = srv_conn_server(c);
    srv_err e;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(body, "tokens");
    int32_t *ids = NULL;
    size_t n = 0, len = 0;
    if (!cJSON_IsArray(t)) {
        srv_err_set(&e, 400, "tokens", "invalid_type", "%s", "'tokens' must be an array of token ids");
    } else if (ids_of(s, t, "tokens", &ids, &n, &e)) {
        mnv_detokenize(s->tok, ids, n, 0, NULL, 0, &len);
        char *text = malloc(len + 1);
        if (text && mnv_detokenize(s->tok, ids, n, 0, text, len + 1, &len) == MNV_OK) {
            char *clean = srv_utf8_clean(text, len);
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "content", clean ? clean : "");
            free(clean);
            free(text);
            free(ids);
            srv_reply_json(c, 200, o);
            return;
        }
        free(text);
        srv_err_set(&e, 400, "tokens", "invalid_value", "%s", mnv_last_error());
    }
    free(ids);
    srv_reply_error(c, &e);
}

/* ---- running a job --------------------------------------------------------------------------- */

static bool stream_flags(const cJSON *body, srv_job *j, srv_err *e) {
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(body, "stream");
    if (st && !cJSON_IsNull(st) && !cJSON_IsBool(st)) return srv_err_set(e, 400, "stream", "invalid_type", "%s", "'stream' must be a boolean");
    j->stream = cJSON_IsTrue(st);
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(body, "stream_options");
    j->include_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
    return true;
}

static int n_choices(const cJSON *body, srv_err *e) {
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(body, "n");
    if (!n || cJSON_IsNull(n)) return 1;
    if (!cJSON_IsNumber(n) || n->valuedouble != (int)n->valuedouble || n->valuedouble < 1 || n->valuedouble > 16) {
        srv_err_set(e, 400, "n", "invalid_value", "%s", "'n' must be an integer in [1, 16]");
        return 0;
    }
    return (int)n->valuedouble;
}

void srv_run_job(srv_conn *c, srv_job *j, bool (*fill)(srv_job *j), cJSON *(*build)(srv_job *j)) {
    srv_job_attach(c, j);
    j->fd = srv_conn_fd(c);
    int64_t prompt = 0;
    for (int i = 0; i < j->n_ch; i++) prompt += (int64_t)j->ch[i].n_prompt;
    srv_conn_count(c, prompt, 0);
    srv_err e;
    mnv_status st = srv_job_submit(j);
    if (st != MNV_OK) {
        if (st == MNV_ERR_RANGE) srv_err_set(&e, 400, "messages", "context_length_exceeded", "%s", mnv_last_error());
        else if (st == MNV_ERR_INVALID_ARG) srv_err_set(&e, 400, NULL, "invalid_value", "%s", mnv_last_error());
        else srv_err_set(&e, 500, NULL, NULL, "%s", mnv_last_error());
        srv_reply_error(c, &e);
        return;
    }
    if (j->stream) {
        srv_reply_stream(c, j, fill);
        return;
    }
    pthread_mutex_lock(&j->mu);
    bool ok = srv_job_wait(j, false);
    if (ok) srv_job_consume(j);
    const srv_choice *bad = NULL;
    for (int i = 0; ok && i < j->n_ch; i++)
        if (j->ch[i].status != MNV_OK) bad = &j->ch[i];
    cJSON *out = ok && !bad ? build(j) : NULL;
    if (bad) srv_err_set(&e, bad->status == MNV_ERR_CANCELLED ? 503 : 500, NULL, NULL, "generation failed: %s", bad->err);
    pthread_mutex_unlock(&j->mu);
    if (!ok) return; /* the client is gone: no answer */
    if (bad) srv_reply_error(c, &e);
    else srv_reply_json(c, 200, out);
}

static cJSON *usage(const srv_job *j) {
    cJSON *u = cJSON_CreateObject(), *d = cJSON_CreateObject();
    int64_t p = 0, g = 0, cached = 0;
    for (int i = 0; i < j->n_ch; i++) {
        /* choices of one prompt (n > 1) count it once */
        if (i == 0 || j->ch[i].prompt != j->ch[i - 1].prompt) p += (int64_t)j->ch[i].n_prompt, cached += j->ch[i].res.n_cached;
        g += j->ch[i].res.gen.n_generated;
    }
    bool resp = j->kind == SRV_RESPONSES;
    cJSON_AddNumberToObject(u, resp ? "input_tokens" : "prompt_tokens", (double)p);
    cJSON_AddNumberToObject(u, resp ? "output_tokens" : "completion_tokens", (double)g);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(p + g));
    cJSON_AddNumberToObject(d, "cached_tokens", (double)cached);
    cJSON_AddItemToObject(u, resp ? "input_tokens_details" : "prompt_tokens_details", d);
    return u;
}

cJSON *srv_usage(const srv_job *j) { return usage(j); }

static cJSON *head(const srv_job *j, const char *object) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", j->id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddNumberToObject(o, "created", (double)j->created);
    cJSON_AddStringToObject(o, "model", j->srv->model_id);
    return o;
}

static void put_event(srv_job *j, cJSON *o) {
    char *t = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!t) return;
    srv_buf_puts(&j->out, "data: ");
    srv_buf_puts(&j->out, t);
    srv_buf_puts(&j->out, "\n\n");
    free(t);
}

static void add_text(cJSON *o, const char *k, const srv_buf *b) {
    char *t = srv_utf8_clean(b->p ? b->p : "", b->len);
    cJSON_AddStringToObject(o, k, t ? t : "");
    free(t);
}

/* The end of a stream: the usage chunk when asked for, then [DONE]. */
static bool stream_end(srv_job *j, const char *object) {
    for (int i = 0; i < j->n_ch; i++)
        if (!j->ch[i].finished_sent) return true;
    if (j->include_usage) {
        cJSON *o = head(j, object);
        cJSON_AddItemToObject(o, "choices", cJSON_CreateArray());
        cJSON_AddItemToObject(o, "usage", usage(j));
        put_event(j, o);
    }
    srv_buf_puts(&j->out, "data: [DONE]\n\n");
    return false;
}

/* ---- /v1/completions ----------------------------------------------------------------------------- */

static bool fill_completion(srv_job *j) {
    for (int i = 0; i < j->n_ch; i++) {
        srv_choice *c = &j->ch[i];
        bool fin = c->read_done && !c->finished_sent;
        if (!c->delta_content.len && !fin && (!j->logprobs || c->lp_sent == c->n_read)) continue;
        cJSON *o = head(j, "text_completion"), *chs = cJSON_CreateArray(), *ch = cJSON_CreateObject();
        add_text(ch, "text", &c->delta_content);
        cJSON_AddNumberToObject(ch, "index", i);
        cJSON_AddItemToObject(ch, "logprobs", srv_logprobs_completion(j, c, c->lp_sent, c->n_read));
        if (fin) cJSON_AddStringToObject(ch, "finish_reason", srv_finish_reason(c));
        else cJSON_AddNullToObject(ch, "finish_reason");
        cJSON_AddItemToArray(chs, ch);
        cJSON_AddItemToObject(o, "choices", chs);
        put_event(j, o);
        c->lp_sent = c->n_read;
        c->delta_content.len = 0;
        if (fin) c->finished_sent = true;
    }
    return stream_end(j, "text_completion");
}

static cJSON *build_completion(srv_job *j) {
    cJSON *o = head(j, "text_completion"), *chs = cJSON_CreateArray();
    for (int i = 0; i < j->n_ch; i++) {
        srv_choice *c = &j->ch[i];
        cJSON *ch = cJSON_CreateObject();
        add_text(ch, "text", &c->content);
        cJSON_AddNumberToObject(ch, "index", i);
        cJSON_AddItemToObject(ch, "logprobs", srv_logprobs_completion(j, c, 0, c->n_toks));
        cJSON_AddStringToObject(ch, "finish_reason", srv_finish_reason(c));
        cJSON_AddItemToArray(chs, ch);
    }
    cJSON_AddItemToObject(o, "choices", chs);
    cJSON_AddItemToObject(o, "usage", usage(j));
    return o;
}

/* The prompts of a completion request: a string, token ids, or an array of either. */
static bool completion_prompts(mnv__server *s, const cJSON *p, srv_job **jp, int n, srv_err *e) {
    int n_prompts = 1;
    bool list = cJSON_IsArray(p) && cJSON_GetArraySize(p) > 0 &&
                (cJSON_IsString(cJSON_GetArrayItem(p, 0)) || cJSON_IsArray(cJSON_GetArrayItem(p, 0)));
    if (list) n_prompts = cJSON_GetArraySize(p);
    if (!cJSON_IsString(p) && !cJSON_IsArray(p))
        return srv_err_set(e, 400, "prompt", "invalid_type", "%s", "'prompt' must be a string, token ids, or an array of them");
    if (n_prompts * n > 64) return srv_err_set(e, 400, "prompt", "invalid_value", "%s", "at most 64 prompts times n");
    srv_job *j = *jp = srv_job_new(s, SRV_COMPLETION, n_prompts * n);
    if (!j) return srv_err_set(e, 500, NULL, NULL, "out of memory");
    for (int k = 0; k < n_prompts; k++) {
        const cJSON *one = list ? cJSON_GetArrayItem(p, k) : p;
        srv_choice *c = &j->ch[k * n];
        if (cJSON_IsString(one)) {
            if (!tokenize(s, one->valuestring, strlen(one->valuestring), mnv_tokenizer_add_bos(s->tok), &c->prompt, &c->n_prompt, e))
                return false;
        } else if (cJSON_IsArray(one)) {
            if (!ids_of(s, one, "prompt", &c->prompt, &c->n_prompt, e)) return false;
        } else {
            return srv_err_set(e, 400, "prompt", "invalid_type", "%s", "'prompt' must be a string, token ids, or an array of them");
        }
        if (c->n_prompt == 0) { /* an empty prompt: the model starts from BOS */
            int32_t bos = mnv_tokenizer_bos(s->tok);
            c->prompt[0] = bos >= 0 ? bos : 0;
            c->n_prompt = 1;
        }
        for (int i = 1; i < n; i++) c[i].prompt = c->prompt, c[i].n_prompt = c->n_prompt;
    }
    return true;
}

/* Choices that share a prompt (n > 1) share its array. */
static void share_prompts(srv_job *j) {
    for (int i = 1; i < j->n_ch; i++)
        if (!j->ch[i].prompt) j->ch[i].prompt = j->ch[i - 1].prompt, j->ch[i].n_prompt = j->ch[i - 1].n_prompt;
}

void srv_h_completions(srv_conn *c, const cJSON *body) {
    mnv__server *s = srv_conn_server(c);
    srv_err e;
    srv_job *j = NULL;
    int n = n_choices(body, &e);
    bool ok = n > 0 && srv_check_model(s, body, &e);
    if (ok && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(body, "echo")))
        ok = srv_err_set(&e, 400, "echo", "unsupported_value", "%s", "echo is not supported");
    if (ok) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(body, "prompt");
        if (!p) ok = srv_err_set(&e, 400, "prompt", "missing_required_parameter", "%s", "'prompt' is required");
        else ok = completion_prompts(s, p, &j, n, &e);
    }
    if (ok) ok = srv_parse_sampling(s, body, j, &e) && stream_flags(body, j, &e);
    if (!ok) {
        srv_job_release(j);
        srv_reply_error(c, &e);
        return;
    }
    share_prompts(j);
    if (!srv_admit(c)) {
        srv_job_release(j);
        return;
    }
    srv_run_job(c, j, fill_completion, build_completion);
}

/* ---- /v1/chat/completions --------------------------------------------------------------------------- */

static cJSON *tool_call_delta(const cJSON *tc, int index) {
    cJSON *d = cJSON_Duplicate(tc, 1);
    cJSON_AddNumberToObject(d, "index", index);
    return d;
}

static bool fill_chat(srv_job *j) {
    for (int i = 0; i < j->n_ch; i++) {
        srv_choice *c = &j->ch[i];
        bool fin = c->read_done && !c->finished_sent;
        int n_tc = c->tool_calls ? cJSON_GetArraySize(c->tool_calls) : 0;
        bool news = c->delta_content.len || c->delta_reasoning.len || n_tc > c->n_tool_calls_sent ||
                    (j->logprobs && c->lp_sent < c->n_read) || !c->role_sent;
        if (!news && !fin) continue;
        cJSON *o = head(j, "chat.completion.chunk"), *chs = cJSON_CreateArray(), *ch = cJSON_CreateObject(),
              *d = cJSON_CreateObject();
        if (!c->role_sent) cJSON_AddStringToObject(d, "role", "assistant");
        if (c->delta_content.len || !c->role_sent) add_text(d, "content", &c->delta_content);
        if (c->delta_reasoning.len) add_text(d, "reasoning_content", &c->delta_reasoning);
        if (n_tc > c->n_tool_calls_sent) {
            cJSON *a = cJSON_CreateArray();
            for (int k = c->n_tool_calls_sent; k < n_tc; k++) cJSON_AddItemToArray(a, tool_call_delta(cJSON_GetArrayItem(c->tool_calls, k), k));
            cJSON_AddItemToObject(d, "tool_calls", a);
            c->n_tool_calls_sent = n_tc;
        }
        cJSON_AddNumberToObject(ch, "index", i);
        cJSON_AddItemToObject(ch, "delta", d);
        cJSON_AddItemToObject(ch, "logprobs", srv_logprobs_chat(j, c, c->lp_sent, c->n_read));
        if (fin && !news) cJSON_AddStringToObject(ch, "finish_reason", srv_finish_reason(c));
        else cJSON_AddNullToObject(ch, "finish_reason");
        cJSON_AddItemToArray(chs, ch);
        cJSON_AddItemToObject(o, "choices", chs);
        put_event(j, o);
        c->role_sent = true;
        c->lp_sent = c->n_read;
        c->delta_content.len = c->delta_reasoning.len = 0;
        if (fin && !news) c->finished_sent = true;
        else if (fin) i--; /* the finish chunk of this choice follows */
    }
    return stream_end(j, "chat.completion.chunk");
}

static cJSON *build_chat(srv_job *j) {
    cJSON *o = head(j, "chat.completion"), *chs = cJSON_CreateArray();
    for (int i = 0; i < j->n_ch; i++) {
        srv_choice *c = &j->ch[i];
        cJSON *ch = cJSON_CreateObject(), *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "assistant");
        if (c->content.len || !c->tool_calls) add_text(m, "content", &c->content);
        else cJSON_AddNullToObject(m, "content");
        if (c->reasoning.len) add_text(m, "reasoning_content", &c->reasoning);
        if (c->tool_calls) cJSON_AddItemToObject(m, "tool_calls", cJSON_Duplicate(c->tool_calls, 1));
        cJSON_AddNumberToObject(ch, "index", i);
        cJSON_AddItemToObject(ch, "message", m);
        cJSON_AddItemToObject(ch, "logprobs", srv_logprobs_chat(j, c, 0, c->n_toks));
        cJSON_AddStringToObject(ch, "finish_reason", srv_finish_reason(c));
        cJSON_AddItemToArray(chs, ch);
    }
    cJSON_AddItemToObject(o, "choices", chs);
    cJSON_AddItemToObject(o, "usage", usage(j));
    return o;
}

/* A chat-shaped job (chat completions and responses): its prompt from messages. */
srv_job *srv_chat_job(srv_conn *c, const cJSON *body, const cJSON *messages, srv_kind kind, int n, srv_err *e) {
    mnv__server *s = srv_conn_server(c);
    srv_job *j = srv_job_new(s, kind, n);
    if (!j) {
        srv_err_set(e, 500, NULL, NULL, "out of memory");
        return NULL;
    }
    int32_t *ids = NULL;
    size_t n_ids = 0;
    bool ok = srv_parse_sampling(s, body, j, e) && stream_flags(body, j, e) &&
              srv_chat_prompt(s, body, messages, j, &ids, &n_ids, e);
    if (!ok) {
        srv_job_release(j);
        return NULL;
    }
    j->ch[0].prompt = ids;
    j->ch[0].n_prompt = n_ids;
    share_prompts(j);
    return j;
}

void srv_h_chat(srv_conn *c, const cJSON *body) {
    mnv__server *s = srv_conn_server(c);
    srv_err e;
    int n = n_choices(body, &e);
    srv_job *j = n > 0 && srv_check_model(s, body, &e)
                     ? srv_chat_job(c, body, cJSON_GetObjectItemCaseSensitive(body, "messages"), SRV_CHAT, n, &e)
                     : NULL;
    if (!j) {
        srv_reply_error(c, &e);
        return;
    }
    if (!srv_admit(c)) {
        srv_job_release(j);
        return;
    }
    srv_run_job(c, j, fill_chat, build_chat);
}
