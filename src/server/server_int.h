/* Internals shared by the server's files:
 *
 *   http.c      libmicrohttpd daemon, the route table, body and depth limits,
 *               authentication, CORS, one log line per request
 *   job.c       a generation job: its engine requests (one per choice), the
 *               tokens they stream back, waiting with disconnect detection
 *   oai.c       OpenAI request fields -> generation parameters; errors
 *   chatfmt.c   chat messages -> prompt ids (Harmony, chat templates, plain)
 *               and model output -> content, reasoning, tool calls
 *   routes.c    the endpoints: completions, chat completions (streamed or
 *               not), models, health, tokenize, detokenize
 *   responses.c /v1/responses
 *   metrics.c   counters and histograms, Prometheus text
 */
#ifndef MNV_SERVER_INT_H
#define MNV_SERVER_INT_H

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "server/server.h"

/* ---- growable text ---------------------------------------------------------- */
typedef struct {
    char *p;
    size_t len, cap;
} srv_buf;
void srv_buf_put(srv_buf *b, const char *s, size_t n);
void srv_buf_puts(srv_buf *b, const char *s);
void srv_buf_printf(srv_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void srv_buf_free(srv_buf *b);

/* ---- metrics ---------------------------------------------------------------- */
#define SRV_N_BUCKETS 12
typedef struct {
    double le[SRV_N_BUCKETS];
    uint64_t count[SRV_N_BUCKETS + 1];
    double sum;
    uint64_t n;
} srv_hist;

typedef struct {
    pthread_mutex_t mu;
    uint64_t by_status[600];
    uint64_t prompt_tokens, completion_tokens, cancelled;
    srv_hist ttft, itl;
} srv_metrics;

void srv_metrics_init(srv_metrics *m);
void srv_metrics_request(srv_metrics *m, int status);
void srv_metrics_tokens(srv_metrics *m, int64_t prompt, int64_t completion, double ttft, double per_token,
                        bool cancelled);
void srv_metrics_text(srv_metrics *m, mnv_engine *e, int active, srv_buf *out);

/* ---- chat formats ------------------------------------------------------------ */
typedef enum { SRV_FMT_PLAIN = 0, SRV_FMT_HARMONY, SRV_FMT_TEMPLATE } srv_fmt;

typedef struct mnv__chat_template mnv__chat_template;

/* ---- the server --------------------------------------------------------------- */
typedef struct srv_job srv_job;

struct mnv__server {
    mnv__server_params p;
    char *api_key, *model_id;
    struct MHD_Daemon *d;
    const mnv_tokenizer *tok;
    int32_t n_vocab;
    srv_fmt fmt;
    mnv_chat_tokens ht;           /* Harmony models */
    mnv__chat_template *tmpl;     /* template models */
    srv_metrics metrics;
    atomic_int active;            /* jobs admitted and not yet ended */
    atomic_int stopping;
    atomic_int ready;             /* the model and engine are set (else: loading) */
    atomic_uint_fast64_t seq;     /* ids of responses */
    pthread_mutex_t mu;           /* the job list */
    srv_job *jobs;
    int port;
};

/* ---- a generation job ------------------------------------------------------- */
typedef struct {
    int32_t id;
    float lp;
    int32_t n_top;
    int32_t top_ids[MNV_MAX_TOP_LOGPROBS];
    float top_lp[MNV_MAX_TOP_LOGPROBS];
    size_t text_end; /* the job text's length after this token */
} srv_tok;

typedef struct {
    srv_job *job;
    int index;
    uint64_t req;                 /* engine request id, 0 when not submitted */
    int32_t *prompt;
    size_t n_prompt;
    /* filled on the engine's thread, under job->mu */
    srv_tok *toks;
    size_t n_toks, cap_toks;
    srv_tok pending_lp;           /* logprobs of the token on_token brings next */
    srv_buf text;
    bool done;
    mnv_status status;
    mnv_request_result res;
    char err[256];
    /* consumer (connection thread) state */
    size_t n_read;                /* tokens handed to the formatter */
    size_t text_read;             /* bytes of text handed on */
    mnv_chat_parser *parser;      /* Harmony */
    srv_buf content, reasoning;   /* accumulated (non-streamed answers) */
    srv_buf delta_content, delta_reasoning; /* new since the last chunk */
    cJSON *tool_calls;            /* array, NULL while none */
    int n_tool_calls_sent;
    size_t lp_sent;               /* tokens whose logprobs were streamed */
    size_t r_streamed, c_streamed; /* chat templates: reasoning and content bytes handed on */
    bool role_sent;
    bool warned, finished_sent, read_done;
} srv_choice;

typedef enum { SRV_COMPLETION = 0, SRV_CHAT, SRV_RESPONSES } srv_kind;

struct srv_job {
    mnv__server *srv;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;                     /* the connection + each submitted request */
    srv_job *next;                /* the server's list */
    srv_kind kind;
    srv_fmt fmt;
    char id[64];
    time_t created;
    int fd;                       /* the client's socket, polled for hang-ups */
    bool stream, include_usage, logprobs, cancelled, disconnected;
    bool think_open;              /* chat templates: the prompt ends inside <think> */
    int32_t top_logprobs;
    srv_choice *ch;
    int n_ch;
    int n_done;
    mnv_generate_params gp;       /* shared by the choices (the seed varies) */
    cJSON *stops;                 /* owned strings of gp.stop_strings */
    const char **stop_v;
    mnv_logit_bias *bias;
    int32_t *scripted;            /* a scripted reply (servers started for tests) */
    /* streaming output */
    srv_buf out;                  /* SSE bytes not yet sent */
    size_t out_off;
    int phase;                    /* kind-specific stream state */
    bool ended;
    void *state;                  /* kind-specific (responses: the output items) */
    void (*state_free)(void *state);
};

srv_job *srv_job_new(mnv__server *s, srv_kind kind, int n_choices);
/* Submit every choice; on failure the submitted ones are cancelled. */
mnv_status srv_job_submit(srv_job *j);
/* Wait until every choice has ended, or something new arrived (any=true),
 * polling the client's socket: a hang-up cancels the job (returns false). */
bool srv_job_wait(srv_job *j, bool any);
void srv_job_cancel(srv_job *j);
void srv_job_release(srv_job *j);
/* Feed the tokens that arrived into each choice's formatter (under mu). */
void srv_job_consume(srv_job *j);
const char *srv_finish_reason(const srv_choice *c);

/* ---- OpenAI request fields (oai.c) ------------------------------------------- */
typedef struct {
    int status;
    char msg[512];
    const char *type, *param, *code;
} srv_err;

/* Sampling and stopping fields of body into j->gp (OpenAI defaults). */
bool srv_parse_sampling(mnv__server *s, const cJSON *body, srv_job *j, srv_err *e);
bool srv_err_set(srv_err *e, int status, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
cJSON *srv_error_json(const srv_err *e);
/* Token text as a JSON-safe string (invalid UTF-8 as U+FFFD). */
char *srv_utf8_clean(const char *s, size_t n);
/* logprobs of tokens [from, to) of a choice; null when not asked for */
cJSON *srv_logprobs_chat(const srv_job *j, const srv_choice *c, size_t from, size_t to);
cJSON *srv_logprobs_completion(const srv_job *j, const srv_choice *c, size_t from, size_t to);

/* ---- chat formats (chatfmt.c) ------------------------------------------------- */
/* The model's chat format (Harmony tokens, or its chat template). */
mnv_status srv_formats_load(mnv__server *s);
void srv_formats_free(mnv__server *s);
/* Prompt ids of a chat request body (messages, tools, reasoning_effort,
 * chat_template_kwargs). */
bool srv_chat_prompt(mnv__server *s, const cJSON *body, const cJSON *messages, srv_job *j, int32_t **ids,
                     size_t *n, srv_err *e);
/* Prepare a choice's output reader; feed it the new tokens; finish it. */
bool srv_chat_reader_init(srv_job *j, srv_choice *c);
void srv_chat_reader_feed(srv_job *j, srv_choice *c);
void srv_chat_reader_finish(srv_job *j, srv_choice *c);
void srv_chat_reader_free(srv_choice *c);

/* ---- endpoints ---------------------------------------------------------------- */
typedef struct srv_conn srv_conn;
struct MHD_Connection;
/* A handler answers through srv_reply_* (exactly once). */
typedef void (*srv_handler)(srv_conn *c, const cJSON *body);

void srv_reply_json(srv_conn *c, int status, cJSON *json); /* takes json */
void srv_reply_text(srv_conn *c, int status, const char *type, const char *text, size_t len);
void srv_reply_error(srv_conn *c, const srv_err *e);
/* Stream j as server-sent events: fill(j) appends bytes to j->out and
 * returns false when the stream is complete. */
void srv_reply_stream(srv_conn *c, srv_job *j, bool (*fill)(srv_job *j));
mnv__server *srv_conn_server(srv_conn *c);
int srv_conn_fd(srv_conn *c);
void srv_conn_count(srv_conn *c, int64_t prompt, int64_t completion);
/* 503 when the queue is full; else counts the job in (srv->active). */
bool srv_admit(srv_conn *c);
void srv_job_attach(srv_conn *c, srv_job *j);

void srv_h_health(srv_conn *c, const cJSON *body);
void srv_h_models(srv_conn *c, const cJSON *body);
void srv_h_metrics(srv_conn *c, const cJSON *body);
void srv_h_tokenize(srv_conn *c, const cJSON *body);
void srv_h_detokenize(srv_conn *c, const cJSON *body);
void srv_h_completions(srv_conn *c, const cJSON *body);
void srv_h_chat(srv_conn *c, const cJSON *body);
void srv_h_responses(srv_conn *c, const cJSON *body);
/* Checks body.model against the served model. */
bool srv_check_model(mnv__server *s, const cJSON *body, srv_err *e);
/* A chat-shaped job of n choices (chat completions, responses): sampling
 * fields and the prompt rendered from messages; NULL and *e on failure. */
srv_job *srv_chat_job(srv_conn *c, const cJSON *body, const cJSON *messages, srv_kind kind, int n, srv_err *e);
cJSON *srv_usage(const srv_job *j);
/* Submit j and answer: streamed (fill) or, once done, as build(j). */
void srv_run_job(srv_conn *c, srv_job *j, bool (*fill)(srv_job *j), cJSON *(*build)(srv_job *j));

#endif
