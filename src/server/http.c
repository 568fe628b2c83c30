/* The HTTP side of the server on libmicrohttpd: one thread per connection,
 * the route table, request bodies within their size and nesting limits,
 * bearer authentication compared in constant time, CORS for the configured
 * origins only, one log line per request, and the replies (JSON, text, and
 * server-sent event streams). */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "server/server_int.h"

#if MHD_VERSION < 0x00097002
typedef int srv_mhd_result;
#else
typedef enum MHD_Result srv_mhd_result;
#endif

struct srv_conn {
    mnv__server *s;
    struct MHD_Connection *conn;
    char method[16], path[160], peer[64];
    srv_buf body;
    bool too_big, replied, admitted;
    int status;
    double t0;
    int64_t prompt, completion;
    srv_job *job;
    const char *origin; /* an allowed origin the request came from */
};

/* ---- replies -------------------------------------------------------------------------- */

mnv__server *srv_conn_server(srv_conn *c) { return c->s; }

void srv_conn_count(srv_conn *c, int64_t prompt, int64_t completion) {
    c->prompt += prompt;
    c->completion += completion;
}

int srv_conn_fd(srv_conn *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

static void add_common_headers(srv_conn *c, struct MHD_Response *r) {
    if (c->origin) {
        MHD_add_response_header(r, "Access-Control-Allow-Origin", c->origin);
        MHD_add_response_header(r, "Vary", "Origin");
    }
}

static void queue(srv_conn *c, int status, struct MHD_Response *r) {
    add_common_headers(c, r);
    MHD_queue_response(c->conn, (unsigned)status, r);
    MHD_destroy_response(r);
    c->status = status;
    c->replied = true;
}

void srv_reply_text(srv_conn *c, int status, const char *type, const char *text, size_t len) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)text, MHD_RESPMEM_MUST_COPY);
    if (!r) return;
    MHD_add_response_header(r, "Content-Type", type);
    if (status == 503) MHD_add_response_header(r, "Retry-After", "1");
    if (status == 401) MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    queue(c, status, r);
}

void srv_reply_json(srv_conn *c, int status, cJSON *json) {
    char *t = json ? cJSON_PrintUnformatted(json) : NULL;
    cJSON_Delete(json);
    if (!t) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\","
                                  "\"param\":null,\"code\":null}}";
        srv_reply_text(c, 500, "application/json", oom, sizeof oom - 1);
        return;
    }
    srv_reply_text(c, status, "application/json", t, strlen(t));
    free(t);
}

void srv_reply_error(srv_conn *c, const srv_err *e) { srv_reply_json(c, e->status, srv_error_json(e)); }

static void reply_err(srv_conn *c, int status, const char *code, const char *fmt, const char *arg) {
    srv_err e;
    srv_err_set(&e, status, NULL, code, fmt, arg);
    srv_reply_error(c, &e);
}

static void reply_too_big(srv_conn *c) {
    srv_err e;
    srv_err_set(&e, 413, NULL, "request_too_large", "the request body exceeds %zu bytes", c->s->p.max_body);
    srv_reply_error(c, &e);
}

/* ---- streams ---------------------------------------------------------------------------- */

typedef struct {
    srv_job *j;
    bool (*fill)(srv_job *j);
} stream_ctx;

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    stream_ctx *sc = cls;
    srv_job *j = sc->j;
    pthread_mutex_lock(&j->mu);
    for (;;) {
        if (j->out_off < j->out.len) {
            size_t n = MNV_MIN(max, j->out.len - j->out_off);
            memcpy(buf, j->out.p + j->out_off, n);
            j->out_off += n;
            if (j->out_off == j->out.len) j->out_off = j->out.len = 0;
            pthread_mutex_unlock(&j->mu);
            return (ssize_t)n;
        }
        if (j->ended) break;
        if (j->disconnected || atomic_load(&j->srv->stopping)) {
            pthread_mutex_unlock(&j->mu);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        srv_job_consume(j);
        if (!sc->fill(j)) j->ended = true;
        if (j->out.len == 0 && !j->ended && !srv_job_wait(j, true)) {
            pthread_mutex_unlock(&j->mu);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
    pthread_mutex_unlock(&j->mu);
    return MHD_CONTENT_READER_END_OF_STREAM;
}

static void stream_free(void *cls) {
    stream_ctx *sc = cls;
    srv_job_release(sc->j);
    free(sc);
}

void srv_reply_stream(srv_conn *c, srv_job *j, bool (*fill)(srv_job *j)) {
    stream_ctx *sc = malloc(sizeof *sc);
    if (!sc) return;
    sc->j = j;
    sc->fill = fill;
    pthread_mutex_lock(&j->mu);
    j->refs++;
    pthread_mutex_unlock(&j->mu);
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, sc, stream_free);
    if (!r) {
        stream_free(sc);
        return;
    }
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    queue(c, 200, r);
}

/* ---- admission ------------------------------------------------------------------------------ */

bool srv_admit(srv_conn *c) {
    mnv__server *s = c->s;
    int limit = s->p.parallel + s->p.max_queue;
    if (atomic_fetch_add(&s->active, 1) >= limit) {
        atomic_fetch_sub(&s->active, 1);
        char n[32];
        snprintf(n, sizeof n, "%d", limit);
        reply_err(c, 503, "server_busy", "the server is busy (%s requests running or waiting); retry later", n);
        return false;
    }
    c->admitted = true;
    return true;
}

void srv_job_attach(srv_conn *c, srv_job *j) { c->job = j; }

/* ---- routing ----------------------------------------------------------------------------------- */

typedef struct {
    const char *method, *path;
    srv_handler fn;
    bool open;     /* no API key needed */
    bool has_body; /* a JSON body */
} route;

static const route ROUTES[] = {
    {"GET", "/health", srv_h_health, true, false},
    {"GET", "/v1/models", srv_h_models, false, false},
    {"GET", "/metrics", srv_h_metrics, false, false},
    {"POST", "/v1/completions", srv_h_completions, false, true},
    {"POST", "/v1/chat/completions", srv_h_chat, false, true},
    {"POST", "/v1/responses", srv_h_responses, false, true},
    {"POST", "/tokenize", srv_h_tokenize, false, true},
    {"POST", "/detokenize", srv_h_detokenize, false, true},
};

/* a == key, in time that depends on the lengths only (not on where they differ). */
static bool const_eq(const char *a, const char *key) {
    size_t na = strlen(a), nk = strlen(key);
    unsigned d = na != nk;
    for (size_t i = 0; i < nk; i++) d |= (unsigned char)((i < na ? a[i] : 0) ^ key[i]);
    return d == 0;
}

static bool authorized(srv_conn *c) {
    if (!c->s->api_key) return true;
    const char *h = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return false;
    h += 7;
    while (*h == ' ') h++;
    return const_eq(h, c->s->api_key);
}

static void cors_origin(srv_conn *c) {
    const char *o = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Origin");
    for (size_t i = 0; o && i < c->s->p.n_cors; i++)
        if (strcmp(c->s->p.cors_origins[i], "*") == 0 || strcmp(c->s->p.cors_origins[i], o) == 0)
            c->origin = c->s->p.cors_origins[i][0] == '*' ? "*" : c->s->p.cors_origins[i];
}

static void preflight(srv_conn *c) {
    struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r) return;
    if (c->origin) {
        MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        MHD_add_response_header(r, "Access-Control-Allow-Headers", "Authorization, Content-Type");
        MHD_add_response_header(r, "Access-Control-Max-Age", "600");
    }
    queue(c, 204, r);
}

static void dispatch(srv_conn *c) {
    if (strcmp(c->method, "OPTIONS") == 0) {
        preflight(c);
        return;
    }
    const route *hit = NULL;
    bool path_known = false;
    for (size_t i = 0; i < sizeof ROUTES / sizeof ROUTES[0]; i++)
        if (strcmp(ROUTES[i].path, c->path) == 0) {
            path_known = true;
            if (strcmp(ROUTES[i].method, c->method) == 0) hit = &ROUTES[i];
        }
    if (!hit) {
        if (path_known) reply_err(c, 405, "method_not_allowed", "method %s is not allowed here", c->method);
        else reply_err(c, 404, "not_found", "no such endpoint: %s", c->path);
        return;
    }
    if (!atomic_load(&c->s->ready) && hit->fn != srv_h_health) {
        reply_err(c, 503, "model_loading", "%s", "the model is loading; retry later");
        return;
    }
    if (!hit->open && !authorized(c)) {
        reply_err(c, 401, "invalid_api_key", "%s", "missing or invalid API key (Authorization: Bearer KEY)");
        return;
    }
    if (c->too_big) {
        reply_too_big(c);
        return;
    }
    cJSON *body = NULL;
    if (hit->has_body) {
        if (mnv__json_depth(c->body.p ? c->body.p : "", c->body.len, c->s->p.max_depth) < 0) {
            srv_err e;
            srv_err_set(&e, 400, NULL, "invalid_json", "the JSON body nests deeper than %d levels", c->s->p.max_depth);
            srv_reply_error(c, &e);
            return;
        }
        body = c->body.len ? cJSON_ParseWithLength(c->body.p, c->body.len) : NULL;
        if (!cJSON_IsObject(body)) {
            cJSON_Delete(body);
            reply_err(c, 400, "invalid_json", "%s", "the request body is not a JSON object");
            return;
        }
    }
    hit->fn(c, body);
    cJSON_Delete(body);
}

static srv_mhd_result on_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    mnv__server *s = cls;
    srv_conn *c = *con_cls;
    if (!c) {
        if (!(c = calloc(1, sizeof *c))) return MHD_NO;
        c->s = s;
        c->conn = conn;
        c->t0 = mnv_time_sec();
        snprintf(c->method, sizeof c->method, "%s", method);
        snprintf(c->path, sizeof c->path, "%s", url);
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)ci->client_addr)->sin_addr, c->peer, sizeof c->peer);
        else if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ci->client_addr)->sin6_addr, c->peer, sizeof c->peer);
        cors_origin(c);
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        *con_cls = c;
        if (cl && strtoull(cl, NULL, 10) > s->p.max_body) {
            c->too_big = true;
            reply_too_big(c); /* at once: the body is never read (the connection then closes) */
        }
        return MHD_YES;
    }
    if (*upload_size && !c->replied && s->p.timeout_s && mnv_time_sec() - c->t0 > s->p.timeout_s) {
        /* a body trickling in: it had the idle timeout to arrive in whole (a
         * stalled one meets the idle timeout itself); no reply can be sent
         * before the body has been read, so the connection is closed */
        c->status = 408;
        return MHD_NO;
    }
    if (*upload_size) {
        if (!c->too_big && c->body.len + *upload_size <= s->p.max_body) srv_buf_put(&c->body, upload, *upload_size);
        else c->too_big = true;
        *upload_size = 0;
        return MHD_YES;
    }
    if (!c->replied) {
        if (atomic_load(&s->stopping)) reply_err(c, 503, "shutting_down", "%s", "the server is shutting down");
        else dispatch(c);
    }
    return c->replied ? MHD_YES : MHD_NO;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe) {
    mnv__server *s = cls;
    srv_conn *c = *con_cls;
    if (!c) return;
    *con_cls = NULL;
    const char *how = "";
    if (c->job) {
        pthread_mutex_lock(&c->job->mu);
        bool running = c->job->n_done < c->job->n_ch;
        pthread_mutex_unlock(&c->job->mu);
        if (running && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) {
            srv_job_cancel(c->job);
            how = " (client gone: cancelled)";
        }
        pthread_mutex_lock(&c->job->mu);
        for (int i = 0; i < c->job->n_ch; i++) c->completion += c->job->ch[i].res.gen.n_generated;
        pthread_mutex_unlock(&c->job->mu);
        srv_job_release(c->job);
    }
    if (c->admitted) atomic_fetch_sub(&s->active, 1);
    srv_metrics_request(&s->metrics, c->status);
    fprintf(stderr, "%s %s %s %d %lld+%lld tokens %.3f s%s\n", c->peer[0] ? c->peer : "-", c->method, c->path,
            c->status, (long long)c->prompt, (long long)c->completion, mnv_time_sec() - c->t0, how);
    srv_buf_free(&c->body);
    free(c);
}

/* ---- start and stop -------------------------------------------------------------------------------- */

static int bind_port(struct MHD_Daemon *d) {
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    return di ? di->port : 0;
}

mnv_status mnv__server_start(const mnv__server_params *p, mnv__server **out) {
    *out = NULL;
    mnv__server *s = calloc(1, sizeof *s);
    if (!s) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    s->p = *p;
    s->p.model = NULL, s->p.engine = NULL;
    s->api_key = p->api_key && *p->api_key ? strdup(p->api_key) : NULL;
    s->model_id = strdup(p->model_id ? p->model_id : "minerva");
    s->p.api_key = NULL;
    pthread_mutex_init(&s->mu, NULL);
    srv_metrics_init(&s->metrics);
    if (p->model) {
        mnv_status st = mnv__server_ready(s, p->model, p->engine, p->max_seq_tokens);
        if (st != MNV_OK) {
            mnv__server_stop(s);
            return st;
        }
    }
    const char *host = p->host ? p->host : "127.0.0.1";
    struct sockaddr_in a4 = {0};
    struct sockaddr_in6 a6 = {0};
    const struct sockaddr *sa;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD;
    if (inet_pton(AF_INET, host, &a4.sin_addr) == 1) {
        a4.sin_family = AF_INET;
        a4.sin_port = htons((uint16_t)p->port);
        sa = (const struct sockaddr *)&a4;
    } else if (inet_pton(AF_INET6, host, &a6.sin6_addr) == 1) {
        a6.sin6_family = AF_INET6;
        a6.sin6_port = htons((uint16_t)p->port);
        sa = (const struct sockaddr *)&a6;
        flags |= MHD_USE_IPv6;
    } else {
        mnv__server_stop(s);
        return mnv_set_error(MNV_ERR_INVALID_ARG, "serve: --host '%s' is not a numeric IPv4 or IPv6 address", host);
    }
    s->d = MHD_start_daemon(flags, (uint16_t)p->port, NULL, NULL, on_access, s, MHD_OPTION_SOCK_ADDR, sa,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_CONNECTION_TIMEOUT,
                            p->timeout_s, MHD_OPTION_CONNECTION_LIMIT, (unsigned)1024, MHD_OPTION_END);
    if (!s->d) {
        mnv__server_stop(s);
        return mnv_set_error(MNV_ERR_IO, "serve: cannot listen on %s port %d (in use, or not an address of this host)",
                             host, p->port);
    }
    s->port = bind_port(s->d);
    *out = s;
    return MNV_OK;
}

int mnv__server_port(const mnv__server *s) { return s->port; }

mnv_status mnv__server_ready(mnv__server *s, mnv_model *model, mnv_engine *engine, int32_t max_seq_tokens) {
    if (!(s->tok = mnv_model_tokenizer(model)))
        return mnv_set_error(MNV_ERR_UNSUPPORTED, "serve: the model directory has no tokenizer.json");
    s->n_vocab = mnv_tokenizer_n_vocab(s->tok);
    s->p.model = model;
    s->p.engine = engine;
    s->p.max_seq_tokens = max_seq_tokens;
    mnv_status st = srv_formats_load(s);
    if (st == MNV_OK) atomic_store(&s->ready, 1); /* publishes the fields above to the HTTP threads */
    return st;
}

void mnv__server_stop(mnv__server *s) {
    if (!s) return;
    atomic_store(&s->stopping, 1);
    pthread_mutex_lock(&s->mu);
    for (srv_job *j = s->jobs; j; j = j->next) srv_job_cancel(j); /* jobs exist only once ready */
    pthread_mutex_unlock(&s->mu);
    /* the cancelled requests end at the engine's next step; the streams then end */
    for (int i = 0; i < 500 && atomic_load(&s->active) > 0; i++) nanosleep(&(struct timespec){0, 10000000}, NULL);
    if (s->d) MHD_stop_daemon(s->d);
    srv_formats_free(s);
    free(s->api_key);
    free(s->model_id);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
