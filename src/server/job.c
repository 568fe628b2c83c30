/* A generation job: one engine request per choice, the tokens they stream
 * back (collected on the engine's thread under the job's mutex), and the
 * connection thread's waiting, which polls the client's socket so that a
 * client that hangs up cancels its requests at once (their KV blocks go back
 * to the pool at the engine's next step). */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "server/server_int.h"

srv_job *srv_job_new(mnv__server *s, srv_kind kind, int n_choices) {
    srv_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    if (!(j->ch = calloc((size_t)n_choices, sizeof *j->ch))) {
        free(j);
        return NULL;
    }
    j->srv = s;
    j->kind = kind;
    j->fmt = kind == SRV_COMPLETION ? SRV_FMT_PLAIN : s->fmt;
    j->n_ch = n_choices;
    j->refs = 1;
    j->fd = -1;
    j->created = time(NULL);
    static const char *const prefix[] = {"cmpl", "chatcmpl", "resp"};
    snprintf(j->id, sizeof j->id, "%s-%llx%08llx", prefix[kind], (unsigned long long)j->created,
             (unsigned long long)atomic_fetch_add(&s->seq, 1));
    for (int i = 0; i < n_choices; i++) j->ch[i].job = j, j->ch[i].index = i;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    j->gp = mnv_generate_params_default();
    pthread_mutex_lock(&s->mu);
    j->next = s->jobs;
    s->jobs = j;
    pthread_mutex_unlock(&s->mu);
    return j;
}

static void job_free(srv_job *j) {
    mnv__server *s = j->srv;
    pthread_mutex_lock(&s->mu);
    for (srv_job **pp = &s->jobs; *pp; pp = &(*pp)->next)
        if (*pp == j) {
            *pp = j->next;
            break;
        }
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < j->n_ch; i++) {
        srv_choice *c = &j->ch[i];
        srv_chat_reader_free(c);
        if (i == 0 || c->prompt != j->ch[i - 1].prompt) free(c->prompt); /* n > 1 share one */
        free(c->toks);
        srv_buf_free(&c->text);
        srv_buf_free(&c->content);
        srv_buf_free(&c->reasoning);
        srv_buf_free(&c->delta_content);
        srv_buf_free(&c->delta_reasoning);
        cJSON_Delete(c->tool_calls);
    }
    free(j->ch);
    cJSON_Delete(j->stops);
    free(j->stop_v);
    free(j->bias);
    free(j->scripted);
    srv_buf_free(&j->out);
    if (j->state_free) j->state_free(j->state);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}

void srv_job_release(srv_job *j) {
    if (!j) return;
    pthread_mutex_lock(&j->mu);
    bool last = --j->refs == 0;
    pthread_mutex_unlock(&j->mu);
    if (last) job_free(j);
}

/* ---- engine callbacks (the engine's thread) ------------------------------------------- */

static void on_logprobs(void *ud, const mnv_token_logprobs *lp) {
    srv_choice *c = ud;
    pthread_mutex_lock(&c->job->mu);
    c->pending_lp.lp = lp->logprob;
    c->pending_lp.n_top = lp->n_top;
    memcpy(c->pending_lp.top_ids, lp->top_ids, (size_t)lp->n_top * sizeof(int32_t));
    memcpy(c->pending_lp.top_lp, lp->top_logprobs, (size_t)lp->n_top * sizeof(float));
    pthread_mutex_unlock(&c->job->mu);
}

static int on_token(void *ud, int32_t tok, const char *text, size_t len) {
    srv_choice *c = ud;
    srv_job *j = c->job;
    pthread_mutex_lock(&j->mu);
    if (c->n_toks == c->cap_toks) {
        size_t cap = c->cap_toks ? 2 * c->cap_toks : 64;
        srv_tok *t = realloc(c->toks, cap * sizeof *t);
        if (!t) {
            pthread_mutex_unlock(&j->mu);
            return 1; /* stop this request: no room for its output */
        }
        c->toks = t, c->cap_toks = cap;
    }
    srv_buf_put(&c->text, text, len);
    srv_tok *t = &c->toks[c->n_toks++];
    *t = c->pending_lp;
    t->id = tok;
    t->text_end = c->text.len;
    c->pending_lp.n_top = 0;
    pthread_cond_broadcast(&j->cv);
    int stop = j->cancelled;
    pthread_mutex_unlock(&j->mu);
    return stop;
}

static void on_done(void *ud, uint64_t id, mnv_status status, const mnv_request_result *res) {
    srv_choice *c = ud;
    srv_job *j = c->job;
    pthread_mutex_lock(&j->mu);
    c->done = true;
    c->status = status;
    c->res = *res;
    if (status != MNV_OK) snprintf(c->err, sizeof c->err, "%s", mnv_last_error());
    int32_t g = res->gen.n_generated;
    srv_metrics_tokens(&j->srv->metrics, c->index == 0 || c->prompt != c[-1].prompt ? (int64_t)c->n_prompt : 0, g,
                       res->first_token_seconds, g > 1 ? res->gen.gen_seconds / (g - 1) : 0.0,
                       status == MNV_ERR_CANCELLED || j->cancelled);
    j->n_done++;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    srv_job_release(j);
}

/* ---- submission ---------------------------------------------------------------------------------- */

mnv_status srv_job_submit(srv_job *j) {
    mnv_status st = MNV_OK;
    for (int i = 0; i < j->n_ch && st == MNV_OK; i++) {
        srv_choice *c = &j->ch[i];
        mnv_request_params rp = mnv_request_params_default();
        rp.prompt = c->prompt;
        rp.n_prompt = c->n_prompt;
        rp.gen = j->gp;
        rp.gen.sampler.seed = j->gp.sampler.seed + (uint64_t)i;
        rp.gen.on_token = on_token;
        rp.gen.on_logprobs = j->logprobs ? on_logprobs : NULL;
        rp.gen.user_data = c;
        rp.on_done = on_done;
        rp.detached = 1;
        if (!srv_chat_reader_init(j, c)) {
            st = mnv_set_error(MNV_ERR_NOMEM, "out of memory");
            break;
        }
        pthread_mutex_lock(&j->mu);
        j->refs++;
        pthread_mutex_unlock(&j->mu);
        uint64_t id = 0;
        st = mnv_engine_submit(j->srv->p.engine, &rp, &id);
        pthread_mutex_lock(&j->mu);
        if (st == MNV_OK) c->req = id;
        else j->refs--;
        pthread_mutex_unlock(&j->mu);
    }
    if (st != MNV_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", mnv_last_error());
        srv_job_cancel(j);
        mnv_set_error(st, "%s", msg);
        /* requests that were submitted still call on_done; count the rest as ended */
        pthread_mutex_lock(&j->mu);
        for (int i = 0; i < j->n_ch; i++)
            if (!j->ch[i].req) j->ch[i].done = true, j->n_done++;
        pthread_mutex_unlock(&j->mu);
    }
    return st;
}

void srv_job_cancel(srv_job *j) {
    pthread_mutex_lock(&j->mu);
    j->cancelled = true;
    for (int i = 0; i < j->n_ch; i++)
        if (j->ch[i].req && !j->ch[i].done) mnv_engine_cancel(j->srv->p.engine, j->ch[i].req);
    pthread_mutex_unlock(&j->mu);
}

/* ---- waiting ----------------------------------------------------------------------------------------- */

static bool client_gone(int fd) {
    if (fd < 0) return false;
    struct pollfd p = {fd, POLLRDHUP, 0};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

static size_t progress(const srv_job *j) {
    size_t n = (size_t)j->n_done;
    for (int i = 0; i < j->n_ch; i++) n += j->ch[i].n_toks;
    return n;
}

bool srv_job_wait(srv_job *j, bool any) {
    size_t seen = progress(j);
    while (j->n_done < j->n_ch && !(any && progress(j) != seen)) {
        if (j->disconnected) return false;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&j->cv, &j->mu, &ts);
        if (j->n_done < j->n_ch && client_gone(j->fd)) {
            j->disconnected = j->cancelled = true;
            for (int i = 0; i < j->n_ch; i++)
                if (j->ch[i].req && !j->ch[i].done) mnv_engine_cancel(j->srv->p.engine, j->ch[i].req);
            return false;
        }
    }
    return true;
}

void srv_job_consume(srv_job *j) {
    for (int i = 0; i < j->n_ch; i++) {
        srv_choice *c = &j->ch[i];
        srv_chat_reader_feed(j, c);
        if (c->done && !c->read_done && c->n_read == c->n_toks) srv_chat_reader_finish(j, c);
    }
}

const char *srv_finish_reason(const srv_choice *c) {
    if (c->tool_calls && cJSON_GetArraySize(c->tool_calls) > 0) return "tool_calls";
    switch (c->res.gen.stop_reason) {
    case MNV_STOP_MAX_TOKENS:
    case MNV_STOP_CONTEXT_FULL: return "length";
    default: return "stop";
    }
}
